/**
 * The OpenAI-compatible HTTP API (`edgellm serve --openai-port N`), so anything that speaks OpenAI's
 * chat completions can use this node: SDKs, curl, and another edgellm node whose upstream this is.
 *
 *   POST /v1/chat/completions   a chat.completion, or with "stream": true server-sent events of
 *                               chat.completion.chunk objects ending with "data: [DONE]"
 *   POST /v1/embeddings         an embedding model's vectors (openai-embeddings.ts: request and reply)
 *   GET  /v1/models             the models this node serves; GET /v1/models/<id> one of them
 *
 * This module speaks HTTP only: the requests run on a ChatBackend (the daemon's local models behind its
 * admission queue, src/daemon/local-chat.ts). Errors are OpenAI's shape, {"error": {message, type,
 * param, code}}, with the matching HTTP status. A client that disconnects cancels its generation. A W3C
 * `traceparent` header names the trace it joins (an invalid one: ignored, a warning); the reply's names its span.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { EdgeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { traceRequest, traceparentOf } from '../../protocol/trace-context.js';
import { readKeyFile, type Secret } from '../../secret.js';
import { LogprobCursor, wireLogprobs, type TokenLogprob } from './openai-logprobs.js';
import { parseChatRequest, RequestFieldError, type ChatRequest } from './openai-request.js';
import { embeddingsReply, parseEmbeddingsRequest, type EmbeddingsRequest } from './openai-embeddings.js';
import { listen, urlHost } from '../../net.js';
import { event, readBody, sendError, sendJson, type ApiError } from './http-io.js';
import type { ChatBackend, GenerateResult, Generation, Started } from './openai-backend.js';
import { apiErrorOf, modelNotFound } from './openai-errors.js';
import { FORWARDED_HEADER } from '../../policy/upstream.js';
import { hasMedia, type MediaLimits } from '../../protocol/media-parts.js';

export type { ChatBackend, GenerateResult, Generation, Started } from './openai-backend.js';

export interface OpenAIServerOptions {
  host: string;
  port: number;
  /** Clients must send "Authorization: Bearer <key>"; none = no key asked. */
  apiKey?: Secret | undefined;
  maxBodyBytes: number;
  /** multimodal.*: image and audio parts (default MEDIA_DEFAULTS). */
  media?: Readonly<MediaLimits> | undefined;
  backend: ChatBackend;
  log: Logger;
}

/** A client that went away; the generation it started is cancelled. */
class ClientGone extends Error {}

export class OpenAIServer {
  private readonly server: http.Server;
  /** Handlers still running (a streamed reply, a generation being drained): close() waits for them. */
  private readonly inFlight = new Set<Promise<void>>();
  private readonly created = Math.floor(Date.now() / 1000);
  private readonly keyDigest: Buffer | undefined;

  constructor(private readonly opts: OpenAIServerOptions) {
    this.keyDigest = opts.apiKey ? digest(opts.apiKey.reveal()) : undefined;
    this.server = http.createServer((req, res) => {
      const handled = this.handle(req, res).catch((err: unknown) => {
        opts.log.warn(`openai: ${req.method} ${req.url} failed: ${(err as Error).message}`);
        if (!res.headersSent) sendError(res, { status: 500, message: 'internal error', type: 'server_error', param: null, code: 'E_ENGINE' });
        else res.destroy();
      });
      this.inFlight.add(handled);
      void handled.finally(() => this.inFlight.delete(handled));
    });
  }

  /** Listens; a port in use (or one that needs privileges) is E_PORT_IN_USE (any other bind failure E_CONFIG), naming the config key. */
  async start(): Promise<void> {
    const { host, port } = this.opts;
    await listen(this.server, port, host).catch((err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'EADDRINUSE'
          ? 'is already in use: stop what listens there, or set another openai.port (--openai-port)'
          : err.code === 'EACCES'
            ? 'needs privileges this user does not have: use a port above 1023'
            : err.code === 'EADDRNOTAVAIL'
              ? `cannot be bound: ${host} is not an address of this machine (openai.host)`
              : `cannot be listened on (${err.code ?? err.message})`;
      throw new EdgeError(err.code === 'EADDRINUSE' ? 'E_PORT_IN_USE' : 'E_CONFIG', `the OpenAI-compatible API's port ${port} on ${host} ${why}`);
    });
    this.server.on('error', (err) => this.opts.log.warn(`the OpenAI-compatible API: ${err.message}`));
    const where = `http://${urlHost(host)}:${this.address().port}/v1`;
    this.opts.log.info(`OpenAI-compatible API on ${where} (${this.opts.apiKey ? 'API key required' : 'no API key asked'})`);
    if (!this.opts.apiKey && !isLoopback(host)) {
      this.opts.log.warn(`the OpenAI-compatible API listens on ${host} without a key: anyone who reaches it can use the models (set openai.api_key_file)`);
    }
  }

  address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  /** Takes no new connections; replies in progress go on. */
  stopAccepting(): void {
    if (this.server.listening) this.server.close();
    this.server.closeIdleConnections();
  }

  /** Waits for the replies in progress (the backend's drain ends them), then closes every connection. */
  async close(): Promise<void> {
    this.stopAccepting();
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    this.server.closeAllConnections();
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]!.replace(/\/+$/, '') || '/';
    if (!this.authorized(req)) {
      const sent = req.headers.authorization !== undefined;
      this.opts.log.info(`openai: ${req.method} ${path} from ${req.socket.remoteAddress ?? 'unknown'} refused: ${sent ? 'a wrong' : 'no'} API key`);
      res.setHeader('www-authenticate', 'Bearer');
      sendError(res, {
        status: 401,
        message: sent
          ? 'Incorrect API key provided: send the key this node was given (its openai.api_key_file) as "Authorization: Bearer <key>"'
          : 'No API key provided: this node asks for one; send it as "Authorization: Bearer <key>"',
        type: 'invalid_request_error',
        param: null,
        code: 'invalid_api_key',
      });
      return;
    }
    if (path === '/v1/chat/completions') {
      if (req.method !== 'POST') return notAllowed(res, req, 'POST');
      return this.chatCompletions(req, res);
    }
    if (path === '/v1/embeddings') {
      if (req.method !== 'POST') return notAllowed(res, req, 'POST');
      return this.embeddings(req, res);
    }
    if (path === '/v1/models') {
      if (req.method !== 'GET') return notAllowed(res, req, 'GET');
      sendJson(res, 200, { object: 'list', data: this.opts.backend.models().map((id) => this.modelCard(id)) });
      return;
    }
    if (path.startsWith('/v1/models/')) {
      if (req.method !== 'GET') return notAllowed(res, req, 'GET');
      const id = safeDecode(path.slice('/v1/models/'.length));
      const models = this.opts.backend.models();
      if (models.includes(id)) sendJson(res, 200, this.modelCard(id));
      else sendError(res, modelNotFound(id, models));
      return;
    }
    sendError(res, {
      status: 404,
      message: `Invalid URL (${req.method} ${path}): this server has POST /v1/chat/completions, POST /v1/embeddings and GET /v1/models`,
      type: 'invalid_request_error',
      param: null,
      code: null,
    });
  }

  private authorized(req: http.IncomingMessage): boolean {
    if (!this.keyDigest) return true;
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    return m !== null && timingSafeEqual(digest(m[1]!.trim()), this.keyDigest);
  }

  private modelCard(id: string) {
    return { id, object: 'model', created: this.created, owned_by: 'edgellm' };
  }

  /** The request's JSON body, or undefined once an error reply went out (or the client went away). */
  private async readJson(req: http.IncomingMessage, res: http.ServerResponse): Promise<{ json: unknown } | undefined> {
    const type = String(req.headers['content-type'] ?? '');
    if (!/^application\/json\b/i.test(type)) {
      // Also what keeps a web page from posting here: a JSON content type needs a CORS preflight, never answered.
      req.resume();
      sendError(res, { status: 415, message: `the body must be JSON sent with "Content-Type: application/json", got ${type === '' ? 'no content type' : JSON.stringify(type)}`, type: 'invalid_request_error', param: null, code: null });
      return undefined;
    }
    const body = await readBody(req, this.opts.maxBodyBytes);
    if (body === 'too large') {
      res.setHeader('connection', 'close');
      sendError(res, { status: 413, message: `the body is larger than ${this.opts.maxBodyBytes} bytes (openai.max_body_bytes)`, type: 'invalid_request_error', param: null, code: null });
      return undefined;
    }
    if (body === 'aborted') return undefined;
    try {
      return { json: JSON.parse(body) };
    } catch (err) {
      sendError(res, { status: 400, message: `the body is not valid JSON (${(err as Error).message}); send a JSON object such as {"model": "...", "messages": [...]}`, type: 'invalid_request_error', param: null, code: null });
      return undefined;
    }
  }

  private async embeddings(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = await this.readJson(req, res);
    if (!body) return;
    let request: EmbeddingsRequest;
    try {
      request = parseEmbeddingsRequest(body.json);
    } catch (err) {
      if (!(err instanceof RequestFieldError)) throw err;
      return sendError(res, { status: 400, message: err.message, type: 'invalid_request_error', param: err.param, code: err.code });
    }
    const gone = new AbortController();
    res.on('close', () => !res.writableFinished && gone.abort(new ClientGone('the client disconnected')));
    try {
      const result = await this.opts.backend.embed(request, gone.signal);
      if (!gone.signal.aborted) sendJson(res, 200, embeddingsReply(result, request.encoding_format));
    } catch (err) {
      if (!gone.signal.aborted) sendError(res, { ...apiErrorOf(err), ...(err instanceof EdgeError && err.code === 'E_INPUT_TOO_LONG' ? { param: 'input' } : {}) });
    }
  }

  private async chatCompletions(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = await this.readJson(req, res);
    if (!body) return;
    const parsed = body.json;
    let request: ChatRequest;
    try {
      request = parseChatRequest(parsed, req.headers['x-edgellm-device'], this.opts.media);
      // An edgellm node forwards image and audio parts once: a request another node forwarded is not
      // passed on again, so no chain of upstreams can send it round in a loop.
      if (req.headers[FORWARDED_HEADER] !== undefined && hasMedia(request.messages)) {
        throw new RequestFieldError(
          `this request with image or audio parts was forwarded by another edgellm node, and edgellm forwards them only once: point that node's upstream.url at a server whose model reads them`,
          'messages',
          'E_NO_ROUTE',
        );
      }
    } catch (err) {
      if (!(err instanceof RequestFieldError)) throw err;
      sendError(res, { status: 400, message: err.message, type: 'invalid_request_error', param: err.param, code: err.code });
      return;
    }

    // The client's going away (a closed socket before the reply ended) cancels the generation.
    const gone = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) gone.abort(new ClientGone('the client disconnected'));
    });
    const id = `chatcmpl-${randomUUID().replace(/-/g, '')}`;
    const { trace, log } = traceRequest(req.headers.traceparent, this.opts.log, `openai ${id}`);
    res.setHeader('traceparent', traceparentOf(trace)); // on errors too
    let started: Started;
    try {
      started = await this.opts.backend.complete(request, gone.signal, trace);
    } catch (err) {
      if (gone.signal.aborted) {
        log.debug(`openai ${id}: the client disconnected while it waited for a slot`);
        return;
      }
      sendError(res, apiErrorOf(err, request));
      return;
    }
    const { generation } = started;
    // With a LoRA adapter the reply names the pair as it can be asked for again: MODEL+ADAPTER.
    const model = started.adapter !== undefined ? `${started.model}+${started.adapter}` : started.model;
    const created = Math.floor(Date.now() / 1000);
    if (request.stream) {
      await this.stream(res, request, { id, model, created, variant: started.variant }, generation, { gone: gone.signal, log });
    } else {
      while (!(await generation.next()).done); // the result holds the whole text
      await this.settle(id, generation, gone.signal, log, (result) => {
        sendJson(res, 200, {
          id,
          object: 'chat.completion',
          created,
          model,
          variant: started.variant, // only for a model name with A/B variants (JSON drops undefined)
          choices: [{ index: 0, message: { role: 'assistant', content: result.text, refusal: null }, logprobs: wireLogprobs(result.logprobs?.content), finish_reason: finishOf(result) }],
          usage: usageOf(result),
        });
      }, (e) => sendError(res, e));
    }
  }

  /** Server-sent events: a role chunk, one chunk per piece of text, the finish, the usage if asked, [DONE]. */
  private async stream(
    res: http.ServerResponse,
    request: ChatRequest,
    head: { id: string; model: string; created: number; variant: string | undefined },
    generation: Generation,
    { gone, log }: { gone: AbortSignal; log: Logger },
  ): Promise<void> {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
    const usageField = request.include_usage ? { usage: null } : {};
    const { id, created, model, variant } = head;
    const chunk = (delta: Record<string, unknown>, finish: string | null, tokens?: TokenLogprob[]) =>
      event(res, { id, object: 'chat.completion.chunk', created, model, variant, choices: [{ index: 0, delta, logprobs: wireLogprobs(tokens), finish_reason: finish }], ...usageField });
    chunk({ role: 'assistant', content: '' }, null);
    const scored = new LogprobCursor();
    for await (const piece of generation) {
      if (!gone.aborted && piece !== '') chunk({ content: piece }, null, scored.take(generation.logprobs));
    }
    await this.settle(head.id, generation, gone, log, (result) => {
      chunk({}, finishOf(result), scored.rest(result.logprobs?.content));
      if (request.include_usage) event(res, { id, object: 'chat.completion.chunk', created, model, choices: [], usage: usageOf(result) });
      res.end('data: [DONE]\n\n');
    }, (e) => {
      // Headers are out: OpenAI's way is an error event; without [DONE] a client knows the reply is incomplete.
      event(res, { error: { message: e.message, type: e.type, param: e.param, code: e.code } });
      res.end();
    });
  }

  /** The generation's outcome: `ok` with its result, or `failed` with the error; nothing when the client has gone. */
  private async settle(id: string, generation: Generation, gone: AbortSignal, log: Logger, ok: (r: GenerateResult) => void, failed: (e: ApiError) => void): Promise<void> {
    let result: GenerateResult;
    try {
      result = await generation.result;
    } catch (err) {
      if (gone.aborted) return;
      const e = apiErrorOf(err);
      log.info(`openai ${id}: ${e.code ?? e.type}: ${e.message}`);
      failed(e);
      return;
    }
    if (gone.aborted) {
      log.debug(`openai ${id}: the client disconnected; cancelled after ${result.usage.completion_tokens} tokens`);
      return;
    }
    log.debug(`openai ${id}: ${result.finish_reason}, ${result.usage.prompt_tokens} + ${result.usage.completion_tokens} tokens`);
    ok(result);
  }
}

/** The key file's key (surrounding whitespace dropped), held as a Secret; E_CONFIG when unreadable or blank. */
export function readOpenAIKey(file: string | undefined): Secret | undefined {
  if (file === undefined) return undefined;
  const key = readKeyFile(file, 'openai.api_key_file');
  if (key === undefined) throw new EdgeError('E_CONFIG', `openai.api_key_file ${file} is empty: write the key clients must send into it, or remove the setting to ask for none`);
  return key;
}

function notAllowed(res: http.ServerResponse, req: http.IncomingMessage, allow: string): void {
  res.setHeader('allow', allow);
  sendError(res, { status: 405, message: `${req.method} is not allowed here: use ${allow}`, type: 'invalid_request_error', param: null, code: null });
}

function finishOf(r: GenerateResult): 'stop' | 'length' {
  return r.finish_reason === 'length' ? 'length' : 'stop';
}

function usageOf(r: GenerateResult) {
  const { prompt_tokens, completion_tokens } = r.usage;
  return { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens };
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

/** A path segment's text; a malformed %-escape is kept as it is (and then names no model). */
function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
