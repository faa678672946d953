/**
 * The OpenAI-compatible API's backend: its requests run on this node's local models through the same
 * RequestQueue as the MQTT requests (batch.max slots, limits.queue_depth waiting, the same limits), so
 * both kinds share the engine's continuous batching and neither can starve the other of slots. Text
 * requests are never sent to an upstream: a node that is another node's upstream must not pass them
 * on. Requests with image or audio parts, which no local model reads, go to `multimodal`
 * (upstream-chat.ts: the upstream under the node's policy), or are refused E_NO_ROUTE without it.
 * Nothing is written to the request store: an HTTP reply is answered on its connection, or not at all.
 * Each request is still counted in /metrics (route "local") and leaves one audit record, under the
 * device name `openai-api` (the API has no device identity; its clients are whoever holds the key).
 * Embeddings do not take a slot: an embedding model (an encoder) serves nothing else, so its requests
 * run at once, one input after another on the model's worker thread (the engine serializes them).
 */
import { randomUUID } from 'node:crypto';
import type { DaemonConfig } from '../config.js';
import { generateParams, promptTooLarge, unknownAdapter, type Generation, type LocalModel } from './engine-port.js';
import type { Logger } from '../log.js';
import { drawDriftSample } from './drift.js';
import { ignoreRequests, type RequestObserver } from './request-observer.js';
import { EdgeError } from '../errors.js';
import { hasMedia, mediaKinds, mediaOf } from '../protocol/media-parts.js';
import type { ChatRequest } from '../transport/http/openai-request.js';
import type { EmbeddingsRequest, EmbeddingsResult } from '../transport/http/openai-embeddings.js';
import type { AuditSink, RequestAudit } from '../policy/audit.js';
import type { ChatBackend, Started } from '../transport/http/openai-server.js';
import { variantFor, type ChosenVariant } from '../policy/variants.js';
import type { TraceContext } from '../protocol/trace-context.js';
import type { RequestQueue } from '../scheduler/request-queue.js';

/** Queue priority of API requests: MQTT's default, so both are served in arrival order. */
const PRIORITY = 5;
/** The audit log's device for requests that came through the OpenAI-compatible API. */
export const API_DEVICE = 'openai-api';

interface Running {
  stop: AbortController;
  ended: Promise<void>;
}

export class LocalChat implements ChatBackend {
  private accepting = true;
  /** Requests waiting for a slot, by queue key, with the way to refuse them. */
  private readonly waiting = new Map<string, (err: EdgeError) => void>();
  private readonly running = new Set<Running>();

  constructor(
    private readonly deps: {
      config: Pick<DaemonConfig, 'limits' | 'metrics'> & Partial<Pick<DaemonConfig, 'variants'>>;
      queue: RequestQueue;
      /** By name; the first is the default. */
      models: Map<string, LocalModel>;
      log: Logger;
      /** Told how each request ended (the /metrics counters). */
      observer?: RequestObserver;
      /** Where each request's record goes (the daemon's audit log). */
      audit?: AuditSink;
      /** Where requests with image or audio parts go (absent: refused with E_NO_ROUTE), an A/B name already resolved to `ab`'s variant. */
      multimodal?: { complete(request: ChatRequest, signal: AbortSignal, trace?: TraceContext, ab?: ChosenVariant): Promise<Started> } | undefined;
    },
  ) {}

  models(): string[] {
    return [...this.deps.models.keys()];
  }

  /** `trace`: the request's (its traceparent header's, or one the endpoint made); its trace id goes to /metrics and the audit. */
  complete(request: ChatRequest, signal: AbortSignal, trace?: TraceContext): Promise<Started> {
    const receivedAt = Date.now();
    const id = randomUUID();
    const traceId = trace?.traceId;
    // An A/B name runs as the variant of its user (the body's user or the x-edgellm-device header), or the one it names.
    let ab: ChosenVariant | undefined;
    try {
      ab = variantFor(this.deps.config.variants ?? {}, request.model, request.user ?? API_DEVICE, request.variant);
    } catch (err) {
      this.report(receivedAt, id, request.model, { outcome: 'error', err, traceId });
      return Promise.reject(err);
    }
    const asRun = ab ? { ...request, model: ab.variant } : request;
    if (hasMedia(request.messages)) {
      if (this.deps.multimodal) return this.deps.multimodal.complete(asRun, signal, trace, ab);
      const kinds = mediaKinds(mediaOf(request.messages));
      const err = new EdgeError('E_NO_ROUTE', `the request has ${kinds} parts, which only an upstream reads (the local models read text), but this node has no upstream configured: set upstream.url and upstream.model, or send the text without the ${kinds}`);
      this.report(receivedAt, id, request.model, { outcome: 'error', err, traceId });
      return Promise.reject(err);
    }
    const adapter = request.adapter;
    const admitted = this.admit(asRun, signal, id);
    admitted.then(
      ({ model, generation }) => {
        const queueMs = Date.now() - receivedAt;
        generation.result.then(
          (r) =>
            this.report(receivedAt, id, model, {
              outcome: r.finish_reason === 'cancelled' ? 'cancelled' : 'done',
              queueMs,
              ttftMs: queueMs + r.timings.ttft_ms,
              prompt: r.usage.prompt_tokens,
              completion: r.usage.completion_tokens,
              tokensPerS: r.timings.decode_tokens_per_s,
              traceId,
              ab,
              adapter,
            }),
          (err: unknown) => this.report(receivedAt, id, model, { outcome: 'error', queueMs, err, traceId, ab, adapter }),
        );
      },
      (err: unknown) => this.report(receivedAt, id, ab?.variant ?? request.model, signal.aborted ? { outcome: 'cancelled', traceId, ab, adapter } : { outcome: 'error', err, traceId, ab, adapter }),
    );
    return admitted.then((started) => ({ ...started, ...(ab ? { variant: ab.variant } : {}), ...(adapter !== undefined ? { adapter } : {}) }));
  }

  /** Every input's vector in order; the request's byte limit is limits.max_prompt_bytes per input. */
  async embed(request: EmbeddingsRequest, signal: AbortSignal): Promise<EmbeddingsResult> {
    const receivedAt = Date.now();
    const id = randomUUID();
    let tokens = 0;
    try {
      if (!this.accepting) throw stopping();
      const model = this.model(request.model);
      for (const input of request.input) {
        const tooLarge = typeof input === 'string' ? promptTooLarge({ prompt: input }, this.deps.config.limits.max_prompt_bytes) : undefined;
        if (tooLarge) throw tooLarge;
      }
      const vectors: Float32Array[] = [];
      for (const input of request.input) {
        if (signal.aborted) throw signal.reason;
        const r = await model.embed(input);
        vectors.push(r.embedding);
        tokens += r.tokens;
      }
      this.report(receivedAt, id, model.name, { outcome: 'done', queueMs: 0, ttftMs: Date.now() - receivedAt, prompt: tokens, completion: 0 });
      return { model: model.name, vectors, prompt_tokens: tokens };
    } catch (err) {
      this.report(receivedAt, id, request.model, signal.aborted ? { outcome: 'cancelled', queueMs: 0 } : { outcome: 'error', err });
      throw err;
    }
  }

  /** The model a request names, or the node's first; E_UNKNOWN_MODEL lists the ones it serves. */
  private model(name = this.models()[0] ?? ''): LocalModel {
    const model = this.deps.models.get(name);
    if (!model) throw new EdgeError('E_UNKNOWN_MODEL', `The model "${name}" does not exist on this node; it serves: ${this.models().join(', ')} (GET /v1/models)`);
    return model;
  }

  /** One metrics observation and one audit record per request, however it ended. */
  private report(
    receivedAt: number,
    id: string,
    model: string | undefined,
    how: {
      outcome: 'done' | 'cancelled' | 'error';
      queueMs?: number;
      ttftMs?: number;
      prompt?: number;
      completion?: number;
      tokensPerS?: number;
      err?: unknown;
      traceId?: string | undefined;
      ab?: ChosenVariant | undefined;
      adapter?: string | undefined;
    },
  ): void {
    const code = how.err instanceof EdgeError ? how.err.code : how.outcome === 'error' ? 'E_ENGINE' : undefined;
    const message = how.err instanceof Error ? how.err.message : how.err === undefined ? '' : String(how.err);
    const refused = how.outcome === 'error' && how.queueMs === undefined;
    (this.deps.observer ?? ignoreRequests).onFinished({
      outcome: how.outcome,
      ...(code !== undefined ? { code } : {}),
      route: refused ? 'none' : 'local',
      queue_ms: how.queueMs,
      ttft_ms: how.outcome === 'done' ? how.ttftMs : undefined,
      total_ms: Date.now() - receivedAt,
      completion_tokens: how.completion ?? 0,
      trace_id: how.traceId,
      ab: how.ab,
    });
    const total = Date.now() - receivedAt;
    const record: RequestAudit = {
      type: 'request',
      time: receivedAt,
      device: API_DEVICE,
      id,
      ...(how.traceId !== undefined ? { trace_id: how.traceId } : {}),
      model,
      ...(how.ab !== undefined ? { variant: how.ab.variant, variant_of: how.ab.name } : {}),
      ...(how.adapter !== undefined ? { adapter: how.adapter } : {}),
      route: 'local',
      route_reason: 'OpenAI-compatible API (answered here, never forwarded)',
      allowed: !refused,
      ...(refused && code !== undefined ? { denied: { code, message } } : {}),
      ...(!refused && how.outcome === 'error' && code !== undefined ? { error: { code, message } } : {}),
      prompt_tokens: how.prompt,
      completion_tokens: how.completion,
      outcome: refused ? 'denied' : how.outcome === 'done' ? 'ok' : how.outcome,
      ...(refused ? {} : { total_ms: total, cached: false }),
      ...(how.tokensPerS !== undefined ? { tokens_per_s: how.tokensPerS } : {}),
    };
    this.deps.audit?.write(record);
  }

  private admit(request: ChatRequest, signal: AbortSignal, id: string): Promise<{ model: string; generation: Generation }> {
    const { queue, config } = this.deps;
    if (!this.accepting) return Promise.reject(stopping());
    if (signal.aborted) return Promise.reject(signal.reason);
    let model: LocalModel;
    try {
      model = this.model(request.model);
    } catch (err) {
      return Promise.reject(err);
    }
    const refusal = promptTooLarge(request, config.limits.max_prompt_bytes) ?? unknownAdapter(model, request.adapter);
    if (refusal) return Promise.reject(refusal);
    if (request.max_tokens !== undefined && request.max_tokens > config.limits.max_tokens) {
      return Promise.reject(new EdgeError('E_BAD_REQUEST', `max_tokens is ${request.max_tokens}; this node allows at most ${config.limits.max_tokens} (limits.max_tokens)`));
    }
    // Without max_tokens, the node's limit is only a ceiling: generate what the context has room for.
    const params = generateParams(request, request.max_tokens ?? config.limits.max_tokens, request.max_tokens === undefined);
    const key = `openai\u0000${id}`;

    return new Promise((resolve, reject) => {
      const stop = new AbortController();
      const onAbort = () => {
        // Waiting: out of the queue at once. Running: the engine ends it 'cancelled' at its next token.
        if (this.waiting.delete(key)) {
          queue.remove(key);
          reject(signal.reason);
        } else {
          stop.abort('client');
        }
      };
      signal.addEventListener('abort', onAbort, { once: true });
      const run = (): Promise<void> => {
        this.waiting.delete(key);
        let generation: Generation;
        try {
          const drift = drawDriftSample(config.metrics.drift_sample);
          generation = model.generate({ ...params, ...(drift ? { raw_logprobs: true } : {}), signal: stop.signal });
          const observer = this.deps.observer ?? ignoreRequests;
          if (drift) generation.result.then((r) => r.raw_logprobs && observer.onDriftSample(model.name, r.raw_logprobs), noop);
        } catch (err) {
          signal.removeEventListener('abort', onAbort);
          reject(err);
          return Promise.resolve();
        }
        // The slot is held until the generation is over: its result settles, or its iteration ends.
        let iterated!: () => void;
        const iterationOver = new Promise<void>((r) => (iterated = r));
        const entry: Running = { stop, ended: Promise.race([generation.result.then(noop, noop), iterationOver]) };
        this.running.add(entry);
        resolve({ model: model.name, generation: watched(generation, iterated, () => stop.signal.reason === 'shutdown') });
        return entry.ended.finally(() => {
          this.running.delete(entry);
          signal.removeEventListener('abort', onAbort);
        });
      };
      this.waiting.set(key, (err) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      });
      try {
        queue.submit({
          key,
          priority: PRIORITY,
          deadlineAt: null,
          run,
          expire: () => undefined, // no deadline: the client's disconnect is what ends a wait
        });
      } catch (err) {
        this.waiting.delete(key);
        signal.removeEventListener('abort', onAbort);
        reject(err);
      }
    });
  }

  /**
   * Takes no more requests and refuses the waiting ones (E_UNAVAILABLE); running generations get
   * `timeoutMs` to finish, then end with E_UNAVAILABLE too. Call it before the queue is cleared.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.accepting = false;
    for (const [key, refuse] of this.waiting) {
      this.deps.queue.remove(key);
      refuse(stopping());
    }
    this.waiting.clear();
    await finishOrStop(() => Promise.allSettled([...this.running].map((r) => r.ended)), timeoutMs, () => {
      if (this.running.size > 0) this.deps.log.info(`stopping ${this.running.size} OpenAI API request(s) still generating`);
      for (const r of this.running) r.stop.abort('shutdown');
    });
  }
}

/**
 * How a drain ends what is running: waits for `all()` at most `timeoutMs`, then `stopAll()` and
 * waits for `all()` again (the stopped requests settle with their refusals).
 */
export async function finishOrStop(all: () => Promise<unknown>, timeoutMs: number, stopAll: () => void): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([all(), new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
  clearTimeout(timer);
  stopAll();
  await all();
}

const noop = () => undefined;
/** The refusal of a request that arrives, or still waits, while the node stops. */
export const stopping = () => new EdgeError('E_UNAVAILABLE', 'this node is stopping and takes no new requests: retry on another node, or once it is back');

/**
 * The engine's generation, telling `iterated` when the caller's iteration is over, and with a result
 * that is E_UNAVAILABLE when shutdown cut it short (a cancelled answer is not an answer).
 */
function watched(gen: Generation, iterated: () => void, cutByShutdown: () => boolean): Generation {
  const result = gen.result.then((r) => {
    if (r.finish_reason === 'cancelled' && cutByShutdown()) {
      throw new EdgeError('E_UNAVAILABLE', `this node stopped after ${r.usage.completion_tokens} tokens, before the answer was complete: ask again`);
    }
    return r;
  });
  result.catch(noop);
  const it: Generation = {
    next: async () => {
      try {
        const r = await gen.next();
        if (r.done) iterated();
        return r;
      } catch (err) {
        iterated();
        throw err;
      }
    },
    return: async (value?: unknown) => {
      try {
        return gen.return ? await gen.return(value) : { value: undefined, done: true };
      } finally {
        iterated();
      }
    },
    [Symbol.asyncIterator]() {
      return it;
    },
    result,
    logprobs: gen.logprobs,
  };
  return it;
}
