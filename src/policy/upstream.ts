/**
 * A client for an OpenAI-compatible upstream (a cloud API, vLLM, llama.cpp's server, Ollama, another
 * edgellm node): POST <url>/chat/completions with stream: true, the server-sent events relayed
 * chunk by chunk.
 *
 *   const reply = upstream.chat({ messages, max_tokens: 256 }, { signal });
 *   for await (const text of reply) send(text);
 *   const { text, finish_reason, usage } = await reply.result;
 *
 * Every wait is bounded: connecting (connect_ms), the first body bytes (first_byte_ms, i.e. the
 * upstream's time to first token), each gap between body chunks (idle_ms) and the whole reply
 * (total_ms). Failures reject with EdgeError E_UPSTREAM whose message names the upstream's origin
 * and what went wrong, never the key. An abort (signal, or `break` out of the loop) ends the reply
 * with finish_reason 'cancelled' and the text so far.
 */
import { EdgeError } from '../errors.js';
import { redactUrl, type Secret } from '../secret.js';
import { UpstreamCall, type UpstreamReply, type UpstreamRequest, type UpstreamTimeouts } from './upstream-call.js';

export { readApiKey, redact, redactText, redactUrl, Secret, REDACTED, DEFAULT_KEY_CREDENTIAL, type ApiKeySource } from '../secret.js';
export { FORWARDED_HEADER, UpstreamError, type ChatMessage, type UpstreamFailure, type UpstreamReply, type UpstreamRequest, type UpstreamResult, type UpstreamTimeouts, type UpstreamUsage } from './upstream-call.js';

export const UPSTREAM_TIMEOUT_DEFAULTS: Readonly<UpstreamTimeouts> = Object.freeze({
  connect_ms: 3_000,
  first_byte_ms: 20_000,
  idle_ms: 10_000,
  total_ms: 120_000,
});

export interface UpstreamOptions {
  /** The API's base URL including its version, e.g. https://api.example.com/v1 (…/chat/completions is appended). */
  url: string;
  /** The model asked for when a request does not override it. */
  model: string;
  /** Sent as "Authorization: Bearer <key>"; none = no header. */
  apiKey?: Secret | undefined;
  timeouts?: Partial<UpstreamTimeouts> | undefined;
}

export class UpstreamClient {
  readonly model: string;
  readonly timeouts: Readonly<UpstreamTimeouts>;
  private readonly endpoint: URL;
  private readonly apiKey: Secret | undefined;
  /** What messages call the upstream: origin and path, no credentials or query. */
  private readonly label: string;

  constructor(opts: UpstreamOptions) {
    let base: URL;
    try {
      base = new URL(opts.url);
    } catch {
      throw new EdgeError('E_CONFIG', `upstream.url "${redactUrl(opts.url)}" is not a URL: give one such as https://api.example.com/v1`);
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw new EdgeError('E_CONFIG', `upstream.url must be http:// or https://, got ${base.protocol}`);
    }
    if (opts.model === '') throw new EdgeError('E_CONFIG', 'upstream.model is empty: name the model the upstream should run');
    const path = base.pathname.replace(/\/+$/, '');
    base.pathname = path.endsWith('/chat/completions') ? path : `${path}/chat/completions`;
    this.endpoint = base;
    this.label = `${base.origin}${base.pathname}`;
    this.model = opts.model;
    this.apiKey = opts.apiKey;
    const t = { ...UPSTREAM_TIMEOUT_DEFAULTS, ...dropUndefined(opts.timeouts ?? {}) };
    for (const [k, v] of Object.entries(t)) {
      if (!Number.isFinite(v) || v <= 0) throw new EdgeError('E_CONFIG', `upstream.timeouts.${k} must be a positive number of milliseconds, got ${v}`);
    }
    this.timeouts = Object.freeze(t);
  }

  /** For status and --print-config: where, which model, whether a key is set; never the key. */
  describe(): { url: string; model: string; api_key: 'set' | 'none'; timeouts: UpstreamTimeouts } {
    return { url: redactUrl(this.label), model: this.model, api_key: this.apiKey ? 'set' : 'none', timeouts: { ...this.timeouts } };
  }

  /**
   * Starts the request at once; see the file comment. Throws nothing: failures reject the reply.
   * `traceparent`: the request's (W3C, this node's span as the parent), sent as the header of that name.
   */
  chat(request: UpstreamRequest, opts: { signal?: AbortSignal | undefined; traceparent?: string | undefined } = {}): UpstreamReply {
    const call = new UpstreamCall(this.endpoint, this.label, this.apiKey, this.timeouts, this.model, request, opts.signal, opts.traceparent);
    return call.stream;
  }
}

function dropUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
