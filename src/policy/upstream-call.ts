/**
 * One call to an OpenAI-compatible upstream (UpstreamClient.chat starts one): the request body, the
 * HTTP exchange under its timers, the server-sent events (sse.ts) read into text chunks, the result or failure.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import { EdgeError } from '../errors.js';
import type { MessageContent } from '../protocol/media-parts.js';
import { redact, type Secret } from '../secret.js';
import { SseReader, SseTooLarge } from './sse.js';
import { PushStream } from './stream.js';

/** Milliseconds. */
export interface UpstreamTimeouts {
  /** TCP (and TLS) connection. */
  connect_ms: number;
  /** From connected until the first body bytes: the upstream's queueing + prefill. */
  first_byte_ms: number;
  /** Longest silence between body chunks after the first. */
  idle_ms: number;
  /** The whole reply. */
  total_ms: number;
}

export interface ChatMessage {
  role: string;
  /** Text, or content parts with images or audio: sent as they are (the upstream reads them, this node cannot). */
  content: MessageContent;
}

export interface UpstreamRequest {
  /** A chat; a bare prompt is sent as one user message. */
  messages?: readonly ChatMessage[] | undefined;
  prompt?: string | undefined;
  /** Overrides UpstreamOptions.model. */
  model?: string | undefined;
  max_tokens?: number | undefined;
  temperature?: number | undefined;
  top_p?: number | undefined;
  seed?: number | undefined;
  stop?: readonly string[] | undefined;
}

export interface UpstreamUsage {
  prompt_tokens: number;
  completion_tokens: number;
}

export interface UpstreamResult {
  text: string;
  /** 'stop' for the upstream's stop and anything but 'length' (content_filter, tool_calls: see raw). */
  finish_reason: 'stop' | 'length' | 'cancelled';
  /** The upstream's own finish_reason, when it sent one. */
  upstream_finish_reason?: string;
  /** Present when the upstream reported usage (stream_options.include_usage). */
  usage?: UpstreamUsage;
  /** The model the upstream says answered. */
  model: string;
  /** Content chunks relayed. */
  chunks: number;
  /** From the call to the first content chunk, and to the end. */
  ttft_ms: number;
  total_ms: number;
}

/** How an upstream call failed, for the breaker and metrics; the message says it in words. */
export type UpstreamFailure = 'connect' | 'timeout' | 'http' | 'protocol' | 'network';

export class UpstreamError extends EdgeError {
  readonly failure: UpstreamFailure;
  /** The HTTP status, for failure 'http'. */
  readonly status: number | undefined;

  constructor(failure: UpstreamFailure, message: string, status?: number) {
    super('E_UPSTREAM', message);
    this.name = 'UpstreamError';
    this.failure = failure;
    this.status = status;
  }
}

/** The reply stream: text chunks as they arrive; `result` once it ends. */
export type UpstreamReply = AsyncIterableIterator<string, UpstreamResult, undefined> & { readonly result: Promise<UpstreamResult> };

/**
 * Sent with every upstream call: an edgellm node's OpenAI endpoint does not forward a request that
 * carries it again (image and audio parts are forwarded once, so no chain of nodes can loop).
 */
export const FORWARDED_HEADER = 'x-edgellm-forwarded';

/** Longest error body quoted in a message (characters). */
const ERROR_BODY_CHARS = 300;
/** Longest SSE event accepted (bytes of data), so a broken server cannot grow memory without bound. */
const MAX_EVENT_BYTES = 1 << 20;

/** One request's state: the HTTP exchange, its timers, the SSE parser and the reply stream. */
export class UpstreamCall {
  readonly stream: PushStream<string, UpstreamResult>;
  private readonly started = Date.now();
  private req: http.ClientRequest | undefined;
  private phaseTimer: NodeJS.Timeout | undefined;
  private totalTimer: NodeJS.Timeout | undefined;
  private text = '';
  private chunks = 0;
  private firstContentAt: number | undefined;
  private finishReason: string | undefined;
  private usage: UpstreamUsage | undefined;
  private answeredModel: string;
  private done = false;
  private decoder = new TextDecoder('utf-8');
  private readonly sse = new SseReader(MAX_EVENT_BYTES);
  private gotBody = false;

  constructor(
    private readonly endpoint: URL,
    private readonly label: string,
    private readonly apiKey: Secret | undefined,
    private readonly timeouts: Readonly<UpstreamTimeouts>,
    defaultModel: string,
    request: UpstreamRequest,
    private readonly signal: AbortSignal | undefined,
    private readonly traceparent?: string | undefined,
  ) {
    this.stream = new PushStream<string, UpstreamResult>(() => this.cancel());
    this.answeredModel = request.model ?? defaultModel;
    if (signal?.aborted) {
      this.finish('cancelled');
      return;
    }
    signal?.addEventListener('abort', this.onAbort, { once: true });
    this.totalTimer = setTimeout(() => this.timeout(`no complete reply within total_ms ${this.timeouts.total_ms}`), this.timeouts.total_ms);
    this.send(bodyOf(request, this.answeredModel));
  }

  private readonly onAbort = (): void => this.cancel();

  private send(body: string): void {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      accept: 'text/event-stream',
      'content-length': String(Buffer.byteLength(body)),
      [FORWARDED_HEADER]: '1',
    };
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey.reveal()}`;
    // W3C Trace Context: the upstream's work joins the request's trace, this node's span its parent.
    if (this.traceparent) headers.traceparent = this.traceparent;
    const lib = this.endpoint.protocol === 'https:' ? https : http;
    let req: http.ClientRequest;
    try {
      req = lib.request(this.endpoint, { method: 'POST', headers, agent: false });
    } catch (err) {
      this.fail(new UpstreamError('network', `${this.label}: the request could not be made (${errCode(err)})`));
      return;
    }
    this.req = req;
    this.arm(this.timeouts.connect_ms, () => this.timeout(`could not connect within connect_ms ${this.timeouts.connect_ms}`));
    req.on('socket', (socket) => {
      const connected = (): void => this.arm(this.timeouts.first_byte_ms, () => this.timeout(`no reply within first_byte_ms ${this.timeouts.first_byte_ms}`));
      if (socket.connecting) socket.once(this.endpoint.protocol === 'https:' ? 'secureConnect' : 'connect', connected);
      else connected();
    });
    req.on('error', (err) => {
      if (this.done) return;
      const code = errCode(err);
      const failure: UpstreamFailure = this.gotBody || code === 'ECONNRESET' ? 'network' : 'connect';
      const what = this.gotBody ? `the connection failed mid-reply after ${this.chunks} chunks (${code})` : `cannot reach the upstream (${code})`;
      this.fail(new UpstreamError(failure, `${this.label}: ${what}`));
    });
    req.on('response', (res) => this.onResponse(res));
    req.end(body);
  }

  private onResponse(res: http.IncomingMessage): void {
    const status = res.statusCode ?? 0;
    const type = String(res.headers['content-type'] ?? '');
    if (status < 200 || status > 299) {
      this.readWhole(res, (body) => {
        this.fail(new UpstreamError('http', `${this.label}: answered HTTP ${status}${errorDetail(body, this.apiKey)}`, status));
      });
      return;
    }
    if (!type.includes('text/event-stream')) {
      // A server that ignored stream: true answers with one JSON completion.
      this.readWhole(res, (body) => this.onWholeCompletion(body));
      return;
    }
    res.on('data', (buf: Buffer) => {
      this.gotBody = true;
      this.arm(this.timeouts.idle_ms, () => this.timeout(`no data for idle_ms ${this.timeouts.idle_ms} after ${this.chunks} chunks`));
      this.feed(this.decoder.decode(buf, { stream: true }));
    });
    res.on('end', () => {
      this.feed(this.decoder.decode() + '\n\n');
      if (this.done) return;
      if (this.finishReason !== undefined) this.finish(mapFinish(this.finishReason));
      else this.fail(new UpstreamError('protocol', `${this.label}: the stream ended before [DONE] after ${this.chunks} chunks`));
    });
    res.on('aborted', () => this.onCut());
    res.on('error', () => this.onCut());
    res.on('close', () => {
      if (!res.complete) this.onCut();
    });
  }

  private onCut(): void {
    if (this.done) return;
    this.fail(new UpstreamError('network', `${this.label}: the stream was cut after ${this.chunks} chunks`));
  }

  private readWhole(res: http.IncomingMessage, then: (body: string) => void): void {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (s: string) => {
      this.gotBody = true;
      this.arm(this.timeouts.idle_ms, () => this.timeout(`no data for idle_ms ${this.timeouts.idle_ms}`));
      if (body.length < MAX_EVENT_BYTES) body += s;
    });
    res.on('end', () => {
      if (!this.done) then(body);
    });
    res.on('aborted', () => this.onCut());
    res.on('error', () => this.onCut());
  }

  private onWholeCompletion(body: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      this.fail(new UpstreamError('protocol', `${this.label}: answered neither an event stream nor JSON`));
      return;
    }
    const p = parsed as { model?: unknown; usage?: unknown; choices?: Array<{ message?: { content?: unknown }; finish_reason?: unknown }> };
    const choice = Array.isArray(p.choices) ? p.choices[0] : undefined;
    const content = choice?.message?.content;
    if (typeof content !== 'string') {
      this.fail(new UpstreamError('protocol', `${this.label}: the JSON answer has no choices[0].message.content`));
      return;
    }
    if (typeof p.model === 'string') this.answeredModel = p.model;
    this.usage = usageOf(p.usage) ?? this.usage;
    this.content(content);
    this.finish(mapFinish(typeof choice?.finish_reason === 'string' ? choice.finish_reason : 'stop'));
  }

  /** Body text in; each event the text completes dispatched, until one ends the reply. */
  private feed(text: string): void {
    let events: string[];
    try {
      events = this.sse.feed(text);
    } catch (err) {
      if (!(err instanceof SseTooLarge)) throw err;
      this.fail(new UpstreamError('protocol', `${this.label}: ${err.message}`));
      return;
    }
    for (const payload of events) {
      if (this.done) return;
      this.dispatch(payload);
    }
  }

  private dispatch(payload: string): void {
    if (payload.trim() === '[DONE]') {
      this.finish(mapFinish(this.finishReason ?? 'stop'));
      return;
    }
    let event: StreamChunk;
    try {
      event = JSON.parse(payload) as StreamChunk;
    } catch {
      this.fail(new UpstreamError('protocol', `${this.label}: an event that is not JSON after ${this.chunks} chunks`));
      return;
    }
    if (event === null || typeof event !== 'object') return;
    if (event.error !== undefined) {
      this.fail(new UpstreamError('protocol', `${this.label}: reported an error mid-stream${errorDetail(JSON.stringify(event), this.apiKey)}`));
      return;
    }
    if (typeof event.model === 'string' && event.model !== '') this.answeredModel = event.model;
    this.usage = usageOf(event.usage) ?? this.usage;
    const choice = Array.isArray(event.choices) ? event.choices[0] : undefined; // usage-only chunks: [] or null
    const content = choice?.delta?.content;
    if (typeof content === 'string' && content !== '') this.content(content);
    if (typeof choice?.finish_reason === 'string') this.finishReason = choice.finish_reason;
  }

  private content(text: string): void {
    this.firstContentAt ??= Date.now();
    this.chunks++;
    this.text += text;
    this.stream.push(text);
  }

  private arm(ms: number, onTimeout: () => void): void {
    if (this.done) return;
    clearTimeout(this.phaseTimer);
    this.phaseTimer = setTimeout(onTimeout, ms);
  }

  private timeout(what: string): void {
    this.fail(new UpstreamError('timeout', `${this.label}: ${what}`));
  }

  private cancel(): void {
    this.finish('cancelled');
  }

  private finish(reason: UpstreamResult['finish_reason']): void {
    if (this.done) return;
    this.cleanup();
    const now = Date.now();
    this.stream.end({
      text: this.text,
      finish_reason: reason,
      ...(this.finishReason !== undefined ? { upstream_finish_reason: this.finishReason } : {}),
      ...(this.usage ? { usage: this.usage } : {}),
      model: this.answeredModel,
      chunks: this.chunks,
      ttft_ms: (this.firstContentAt ?? now) - this.started,
      total_ms: now - this.started,
    });
  }

  private fail(err: UpstreamError): void {
    if (this.done) return;
    this.cleanup();
    this.stream.fail(err);
  }

  private cleanup(): void {
    this.done = true;
    clearTimeout(this.phaseTimer);
    clearTimeout(this.totalTimer);
    this.signal?.removeEventListener('abort', this.onAbort);
    this.req?.destroy();
  }
}

interface StreamChunk {
  model?: unknown;
  usage?: unknown;
  error?: unknown;
  choices?: Array<{ delta?: { content?: unknown }; finish_reason?: unknown }> | null;
}

function bodyOf(r: UpstreamRequest, model: string): string {
  const messages = r.messages ?? [{ role: 'user', content: r.prompt ?? '' }];
  return JSON.stringify({
    model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    ...(r.max_tokens !== undefined ? { max_tokens: r.max_tokens } : {}),
    ...(r.temperature !== undefined ? { temperature: r.temperature } : {}),
    ...(r.top_p !== undefined ? { top_p: r.top_p } : {}),
    ...(r.seed !== undefined ? { seed: r.seed } : {}),
    ...(r.stop !== undefined && r.stop.length > 0 ? { stop: r.stop } : {}),
  });
}

function usageOf(u: unknown): UpstreamUsage | undefined {
  if (u === null || typeof u !== 'object') return undefined;
  const { prompt_tokens: p, completion_tokens: c } = u as { prompt_tokens?: unknown; completion_tokens?: unknown };
  if (typeof p !== 'number' || typeof c !== 'number') return undefined;
  return { prompt_tokens: p, completion_tokens: c };
}

function mapFinish(reason: string): UpstreamResult['finish_reason'] {
  return reason === 'length' ? 'length' : 'stop';
}

/** ": <the server's message>" from an error body, short, with the key and URL credentials masked. */
function errorDetail(body: string, key: Secret | undefined): string {
  let detail = body.trim();
  try {
    const parsed = JSON.parse(detail) as { error?: { message?: unknown } | string; message?: unknown };
    const msg = typeof parsed.error === 'string' ? parsed.error : (parsed.error?.message ?? parsed.message);
    if (typeof msg === 'string') detail = msg;
  } catch {
    // not JSON: quote the text
  }
  detail = redact(detail.replace(/\s+/g, ' '), [key]);
  if (detail.length > ERROR_BODY_CHARS) detail = `${detail.slice(0, ERROR_BODY_CHARS)}...`;
  return detail === '' ? '' : `: ${detail}`;
}

function errCode(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : 'error';
}
