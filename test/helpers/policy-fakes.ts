// Test doubles for the policy tests: an OpenAI-compatible upstream on loopback that speaks the
// streaming protocol (with ways to misbehave).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type UpstreamMode =
  /** Streams CLOUD_CHUNKS, a finish_reason, a usage-only chunk, then [DONE]. */
  | 'normal'
  /** Like normal after first_byte_delay_ms of silence (headers included). */
  | 'slow-first-byte'
  /** HTTP 500 with a JSON error that quotes the request's Authorization header. */
  | '500'
  /** Two chunks, then the socket is destroyed. */
  | 'cut'
  /** Two chunks, then silence with the connection open. */
  | 'stall'
  /** Accepts the request and never answers. */
  | 'hang'
  /** A plain JSON completion (a server that ignores stream: true). */
  | 'json'
  /** One chunk, then an error event in the stream. */
  | 'error-event'
  /** Chunks without finish_reason or [DONE], then a clean end of the body. */
  | 'no-done';

/** Roles of the policy tests' daemons: local only, local and cloud, and local_only with both routes. */
export const TEST_ROLES = {
  local: { models: ['*'], routes: ['local'] },
  hybrid: { models: ['*'], routes: ['local', 'cloud'] },
  private: { models: ['*'], routes: ['local', 'cloud'], local_only: true },
};

export const CLOUD_CHUNKS = ['Hello', ' from', ' the', ' cloud', '.'];
export const CLOUD_TEXT = CLOUD_CHUNKS.join('');

export interface FakeUpstream {
  url: string;
  mode: UpstreamMode;
  first_byte_delay_ms: number;
  /** Requests received (any mode). */
  requests: number;
  bodies: unknown[];
  /** Each request body exactly as it arrived (the multimodal tests compare parts byte for byte). */
  raw: string[];
  headers: IncomingMessage['headers'][];
  authorizations: Array<string | undefined>;
  /** Stops accepting and destroys open connections. */
  close(): Promise<void>;
}

export async function startFakeUpstream(mode: UpstreamMode = 'normal'): Promise<FakeUpstream> {
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, f: () => void): void => {
    const t = setTimeout(() => {
      timers.delete(t);
      f();
    }, ms);
    timers.add(t);
  };
  const state: FakeUpstream = {
    url: '',
    mode,
    first_byte_delay_ms: 500,
    requests: 0,
    bodies: [],
    raw: [],
    headers: [],
    authorizations: [],
    close: async () => {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };

  const chunk = (content: string | null, finish: string | null = null, extra: object = {}) =>
    `data: ${JSON.stringify({
      id: 'chatcmpl-test',
      object: 'chat.completion.chunk',
      created: 1,
      model: 'big-model',
      choices: [{ index: 0, delta: content === null ? {} : { content }, finish_reason: finish }],
      ...extra,
    })}\n\n`;

  const stream = (res: ServerResponse, body: { max_tokens?: number }): void => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write(': keep-alive comment\n\n');
    res.write(`data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', model: 'big-model', choices: [{ index: 0, delta: { role: 'assistant' }, finish_reason: null }] })}\n\n`);
    // Events split across writes and CRLF line ends: the client must reassemble them.
    const first = chunk(CLOUD_CHUNKS[0]!).replace(/\n/g, '\r\n');
    res.write(first.slice(0, 10));
    res.write(first.slice(10));
    for (const c of CLOUD_CHUNKS.slice(1)) res.write(chunk(c));
    res.write(chunk(null, body.max_tokens === 3 ? 'length' : 'stop'));
    res.write(`data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', model: 'big-model', choices: [], usage: { prompt_tokens: 11, completion_tokens: CLOUD_CHUNKS.length, total_tokens: 16 } })}\n\n`);
    res.end('data: [DONE]\n\n');
  };

  const handle = (req: IncomingMessage, res: ServerResponse, raw: string): void => {
    state.requests++;
    const auth = req.headers.authorization;
    state.authorizations.push(auth);
    state.raw.push(raw);
    state.headers.push(req.headers);
    let body: { max_tokens?: number } = {};
    try {
      body = JSON.parse(raw) as { max_tokens?: number };
    } catch {
      // recorded as is
    }
    state.bodies.push(body);
    switch (state.mode) {
      case 'normal':
        return stream(res, body);
      case 'slow-first-byte':
        return later(state.first_byte_delay_ms, () => stream(res, body));
      case '500':
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: `internal error while serving ${auth ?? 'anonymous'} (key ${auth?.slice(7) ?? ''})`, type: 'server_error' } }));
        return;
      case 'cut':
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(chunk('Hello') + chunk(' from'));
        return later(30, () => res.socket?.destroy());
      case 'stall':
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(chunk('Hello') + chunk(' from'));
        return;
      case 'hang':
        return;
      case 'json':
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ model: 'big-model', choices: [{ index: 0, message: { role: 'assistant', content: CLOUD_TEXT }, finish_reason: 'stop' }], usage: { prompt_tokens: 11, completion_tokens: 5 } }));
        return;
      case 'error-event':
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(chunk('Hello'));
        res.end(`data: ${JSON.stringify({ error: { message: 'model overloaded' } })}\n\n`);
        return;
      case 'no-done':
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.end(chunk('Hello') + chunk(' from'));
        return;
    }
  };

  const server = createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (s: string) => (raw += s));
    req.on('end', () => handle(req, res, raw));
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  return state;
}

/** A port on loopback with nothing listening (bound, then closed). */
export async function closedPortUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}/v1`;
}
