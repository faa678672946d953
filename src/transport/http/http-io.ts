/**
 * The HTTP plumbing the OpenAI-compatible API's routes share: the body read with a size limit,
 * JSON replies, OpenAI's error body, server-sent events.
 */
import type * as http from 'node:http';

/** OpenAI's error body. */
export interface ApiError {
  status: number;
  message: string;
  type: 'invalid_request_error' | 'authentication_error' | 'permission_error' | 'rate_limit_error' | 'server_error';
  param: string | null;
  code: string | null;
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export function sendError(res: http.ServerResponse, e: ApiError): void {
  if (e.status === 429 || e.status === 503) res.setHeader('retry-after', '1');
  sendJson(res, e.status, { error: { message: e.message, type: e.type, param: e.param, code: e.code } });
}

export function event(res: http.ServerResponse, body: unknown): void {
  if (!res.writableEnded && !res.destroyed) res.write(`data: ${JSON.stringify(body)}\n\n`);
}

export /** The body as text, up to `limit` bytes (Content-Length is checked first, then what arrives). */
function readBody(req: http.IncomingMessage, limit: number): Promise<string | 'too large' | 'aborted'> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    return Promise.resolve('too large');
  }
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let size = 0;
    req.on('data', (b: Buffer) => {
      size += b.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        resolve('too large');
        return;
      }
      parts.push(b);
    });
    req.on('end', () => resolve(size > limit ? 'too large' : Buffer.concat(parts).toString('utf8')));
    req.on('aborted', () => resolve('aborted'));
    req.on('error', () => resolve('aborted'));
  });
}
