/**
 * Where a request is decided and answered: recorded durably, checked against the limits, answered from
 * the cache or queued for the engine, and its replies handed to the transport. `receive` does all its
 * writes before it returns, so the transport may acknowledge the message as soon as it does.
 */
import type { DaemonConfig } from './config.js';
import type { GenerateParams, GenerateResult, LocalModel } from './engine-port.js';
import type { Logger } from './log.js';
import { ignoreRequests, type RequestObserver, type RequestRoute } from './request-observer.js';
import { EdgeError, type ErrorCode } from '../errors.js';
import type { RequestQueue } from '../scheduler/request-queue.js';
import { cacheKey, isDeterministic, type Store, type StoredRequest } from '../store/index.js';
import type { OutboxMessage } from '../store/outbox.js';
import { chunkMessage, decodeRequest, doneMessage, errorMessage, type DoneFields, type WireRequest } from '../transport/mqtt/codec.js';

/** A request as the transport received it. */
export interface IncomingRequest {
  device: string;
  payload: Buffer;
  /** MQTT 5 Response Topic, when the publisher set one. */
  responseTopic?: string | undefined;
  correlation?: Buffer | undefined;
  /** MQTT 5 Message Expiry Interval left when the broker forwarded it, in seconds. */
  expirySeconds?: number | undefined;
  /** The broker's redelivery of a message we may already have acknowledged (the DUP flag). */
  redelivered?: boolean | undefined;
}

/** How replies leave; the transport implements it. */
export interface ReplyChannel {
  /** A streamed piece: best effort (the final reply repeats the whole text). */
  chunk(topic: string, correlation: Buffer | null, payload: string): void;
  /** A final reply already in the outbox: publish it and clear it from the outbox once acknowledged. */
  deliver(message: OutboxMessage): void;
}

/** Until a transport is attached, chunks go nowhere and finals wait in the outbox. */
const offline: ReplyChannel = { chunk: () => undefined, deliver: () => undefined };

type AbortReason = 'cancel' | 'deadline' | 'shutdown';

export interface ResponderStats {
  queue_depth: number;
  running: number;
  requests_total: number;
  errors_total: number;
  cache_hit_rate: number;
  tokens_per_s: number;
  outbox: number;
}

export class Responder {
  private channel: ReplyChannel = offline;
  private readonly active = new Map<string, AbortController>();
  private accepting = true;
  private requestsTotal = 0;
  private errorsTotal = 0;
  private readonly recentRates: number[] = [];

  constructor(
    private readonly deps: {
      config: DaemonConfig;
      store: Store;
      queue: RequestQueue;
      /** By name; the first is the default. */
      models: Map<string, LocalModel>;
      log: Logger;
      /** Told how each request ended (the /metrics counters). */
      observer?: RequestObserver;
    },
  ) {}

  private get observer(): RequestObserver {
    return this.deps.observer ?? ignoreRequests;
  }

  attach(channel: ReplyChannel): void {
    this.channel = channel;
  }

  /**
   * Records and admits one request. Returns once every write has committed; throws only when the store
   * cannot be written (then the message must not be acknowledged).
   */
  receive(msg: IncomingRequest, defaultReplyTopic: string): void {
    const now = Date.now();
    const decoded = decodeRequest(msg.payload);
    const replyTopic = msg.responseTopic ?? (decoded.ok ? decoded.request.reply_to : decoded.replyTo) ?? defaultReplyTopic;
    const correlation = msg.correlation ?? null;
    this.requestsTotal++;
    if (!decoded.ok) {
      this.errorsTotal++;
      this.deps.log.info(`request from ${msg.device} refused: ${decoded.message}`);
      this.observer.onFinished({ outcome: 'error', code: decoded.code, route: 'none', total_ms: 0, completion_tokens: 0 });
      this.channel.deliver(this.deps.store.outbox.add(replyTopic, errorMessage(decoded.id, decoded.code, decoded.message), correlation));
      return;
    }
    const r = decoded.request;
    const deadlines = [
      ...(r.deadline_ms !== undefined ? [now + r.deadline_ms] : []),
      ...(msg.expirySeconds !== undefined ? [now + msg.expirySeconds * 1000] : []),
    ];
    const stored: StoredRequest = {
      device: msg.device,
      id: r.id,
      payload: JSON.stringify(r),
      replyTopic,
      correlation,
      state: 'queued',
      reply: null,
      receivedAt: now,
      deadlineAt: deadlines.length > 0 ? Math.min(...deadlines) : null,
    };
    const accepted = this.deps.store.requests.accept(stored);
    if (!accepted.inserted) {
      const { existing } = accepted;
      this.deps.log.debug(`duplicate request ${msg.device}/${r.id} (${existing.state})`);
      // A device's repeat of an answered id gets the same answer again, to wherever this copy asked.
      // Not answered yet: it will be answered once. A broker redelivery (we crashed before its PUBACK
      // went out) of an answered request needs nothing: that answer is already on its way.
      if (existing.reply !== null && !msg.redelivered) this.channel.deliver(this.deps.store.outbox.add(replyTopic, existing.reply, correlation));
      return;
    }
    this.deps.log.debug(`accepted ${msg.device}/${r.id}`);
    this.admit(stored, r, false);
  }

  /** Takes back every request accepted but not answered before the last stop; returns how many. */
  resume(): number {
    const open = this.deps.store.requests.unanswered();
    for (const row of open) {
      this.deps.store.requests.markQueued(row.device, row.id);
      this.admit({ ...row, state: 'queued' }, JSON.parse(row.payload) as WireRequest, true);
    }
    if (open.length > 0) this.deps.log.info(`resumed ${open.length} request(s) accepted before the last stop`);
    return open.length;
  }

  /** A device's cancel: a waiting request ends at once, a running one at its next token. */
  cancel(device: string, id: string): void {
    const key = keyOf(device, id);
    const running = this.active.get(key);
    if (running) {
      running.abort('cancel' satisfies AbortReason);
      return;
    }
    if (this.deps.queue.remove(key)) {
      const row = this.deps.store.requests.get(device, id);
      if (row) this.finishDone(row, JSON.parse(row.payload) as WireRequest, this.modelName(row), {
        text: '',
        finish_reason: 'cancelled',
        usage: { prompt_tokens: 0, completion_tokens: 0 },
      }, { cached: false, startedAt: Date.now(), firstAt: undefined, tokensPerS: 0 });
    }
  }

  /**
   * Stops starting generations; running ones get `timeoutMs` to finish, then are stopped and left
   * queued in the store for the next start, as are the waiting ones.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.accepting = false;
    this.deps.queue.pause();
    this.deps.queue.clear();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([this.deps.queue.idle(), timeout]);
    clearTimeout(timer);
    for (const ac of this.active.values()) ac.abort('shutdown' satisfies AbortReason);
    await this.deps.queue.idle();
  }

  stats(): ResponderStats {
    const rates = this.recentRates;
    return {
      queue_depth: this.deps.queue.depth,
      running: this.deps.queue.running,
      requests_total: this.requestsTotal,
      errors_total: this.errorsTotal,
      cache_hit_rate: round(this.deps.store.cache.hitRate(), 3),
      tokens_per_s: rates.length === 0 ? 0 : round(rates.reduce((a, b) => a + b, 0) / rates.length, 2),
      outbox: this.deps.store.outbox.size(),
    };
  }

  /** Limits, cache, then the queue; every refusal is a final error reply. */
  private admit(row: StoredRequest, r: WireRequest, resumed: boolean): void {
    const { config, store, queue } = this.deps;
    const modelName = r.model ?? this.defaultModel();
    const model = this.deps.models.get(modelName);
    if (!model) {
      return this.finishError(row, 'E_UNKNOWN_MODEL', `model "${modelName}" is not served here; this node serves: ${[...this.deps.models.keys()].join(', ')}`);
    }
    if (r.route === 'cloud') {
      return this.finishError(row, 'E_NO_UPSTREAM', 'route "cloud" was asked for but this node has no upstream: send route "auto" or "local"');
    }
    const promptBytes = r.prompt !== undefined ? Buffer.byteLength(r.prompt) : (r.messages ?? []).reduce((n, m) => n + Buffer.byteLength(m.content), 0);
    if (promptBytes > config.limits.max_prompt_bytes) {
      return this.finishError(row, 'E_PROMPT_TOO_LONG', `the prompt is ${promptBytes} bytes; this node takes at most ${config.limits.max_prompt_bytes} (limits.max_prompt_bytes)`);
    }
    if (r.max_tokens !== undefined && r.max_tokens > config.limits.max_tokens) {
      return this.finishError(row, 'E_BAD_REQUEST', `field "max_tokens" is ${r.max_tokens}; this node allows at most ${config.limits.max_tokens} (limits.max_tokens)`);
    }
    if (row.deadlineAt !== null && row.deadlineAt <= Date.now()) {
      return this.finishError(row, 'E_DEADLINE', 'the deadline passed before the request could start');
    }
    const params = this.params(r);
    if (config.cache.enabled && isDeterministic(params)) {
      const hit = store.cache.get(cacheKey(modelName, params));
      this.observer.onCacheLookup(hit !== undefined);
      if (hit) {
        const now = Date.now();
        if (r.stream) this.channel.chunk(row.replyTopic, row.correlation, chunkMessage(row.id, 0, hit.text));
        return this.finishDone(row, r, modelName, hit, { cached: true, startedAt: now, firstAt: now, tokensPerS: 0 });
      }
    }
    if (!this.accepting) return; // draining: stays queued in the store for the next start
    try {
      queue.submit(
        {
          key: keyOf(row.device, row.id),
          priority: r.priority ?? 5,
          deadlineAt: row.deadlineAt,
          run: () => this.generate(row, r, model, params),
          expire: () => this.finishError(row, 'E_DEADLINE', 'the deadline passed while the request waited for a free slot', 'local'),
        },
        { force: resumed },
      );
    } catch (err) {
      if (err instanceof EdgeError) return this.finishError(row, err.code, err.message, 'local');
      throw err;
    }
  }

  private async generate(row: StoredRequest, r: WireRequest, model: LocalModel, params: GenerateParams): Promise<void> {
    const { store } = this.deps;
    const key = keyOf(row.device, row.id);
    const startedAt = Date.now();
    store.requests.markRunning(row.device, row.id, startedAt);
    const ac = new AbortController();
    this.active.set(key, ac);
    let deadlineTimer: NodeJS.Timeout | undefined;
    if (row.deadlineAt !== null) {
      deadlineTimer = setTimeout(() => ac.abort('deadline' satisfies AbortReason), Math.max(0, row.deadlineAt - startedAt));
    }
    let text = '';
    let seq = 0;
    let firstAt: number | undefined;
    const outcome = (): AbortReason | undefined => (ac.signal.aborted ? (ac.signal.reason as AbortReason) : undefined);
    try {
      const generation = model.generate({ ...params, signal: ac.signal });
      for await (const piece of generation) {
        firstAt ??= Date.now();
        text += piece;
        if (r.stream && piece !== '') this.channel.chunk(row.replyTopic, row.correlation, chunkMessage(row.id, seq++, piece));
      }
      const result = await generation.result;
      this.settle(row, r, model.name, outcome(), result, { startedAt, firstAt });
      if (outcome() === undefined && result.finish_reason !== 'cancelled' && this.deps.config.cache.enabled && isDeterministic(params)) {
        store.cache.put(cacheKey(model.name, params), model.name, { text: result.text, finish_reason: result.finish_reason, usage: result.usage });
      }
    } catch (err) {
      const reason = outcome();
      if (reason !== undefined) {
        this.settle(row, r, model.name, reason, undefined, { startedAt, firstAt, partialText: text });
      } else {
        const e = err instanceof EdgeError ? err : new EdgeError('E_ENGINE', `the engine failed: ${(err as Error).message}`, { cause: err });
        this.deps.log.warn(`request ${row.device}/${row.id} failed: ${e.code}: ${e.message}`);
        this.finishError(row, e.code, e.message, 'local');
      }
    } finally {
      clearTimeout(deadlineTimer);
      this.active.delete(key);
    }
  }

  /** The final reply of a generation that ran, by how it ended. */
  private settle(
    row: StoredRequest,
    r: WireRequest,
    modelName: string,
    reason: AbortReason | undefined,
    result: GenerateResult | undefined,
    t: { startedAt: number; firstAt: number | undefined; partialText?: string },
  ): void {
    if (reason === 'shutdown') {
      this.deps.store.requests.markQueued(row.device, row.id);
      return;
    }
    if (reason === 'deadline') {
      this.finishError(row, 'E_DEADLINE', 'the deadline passed while the answer was being generated', 'local');
      return;
    }
    const answer = result ?? { text: t.partialText ?? '', finish_reason: 'cancelled' as const, usage: { prompt_tokens: 0, completion_tokens: 0 } };
    const finish = reason === 'cancel' ? ('cancelled' as const) : answer.finish_reason;
    const tokensPerS = result?.timings.decode_tokens_per_s ?? 0;
    if (tokensPerS > 0) {
      this.recentRates.push(tokensPerS);
      if (this.recentRates.length > 20) this.recentRates.shift();
    }
    this.finishDone(row, r, modelName, { ...answer, finish_reason: finish }, { cached: false, startedAt: t.startedAt, firstAt: t.firstAt, tokensPerS });
  }

  private finishDone(
    row: StoredRequest,
    r: WireRequest,
    modelName: string,
    answer: Pick<DoneFields, 'text' | 'finish_reason' | 'usage'>,
    t: { cached: boolean; startedAt: number; firstAt: number | undefined; tokensPerS: number },
  ): void {
    const now = Date.now();
    const fields: DoneFields = {
      ...answer,
      route: 'local',
      route_reason: r.local_only ? 'local_only requested' : r.route === 'local' ? 'route local requested' : 'no upstream configured',
      cached: t.cached,
      model: modelName,
      node: this.deps.config.node_id,
      timings: {
        queue_ms: t.startedAt - row.receivedAt,
        ttft_ms: (t.firstAt ?? now) - row.receivedAt,
        total_ms: now - row.receivedAt,
        tokens_per_s: round(t.tokensPerS, 2),
      },
    };
    const state = answer.finish_reason === 'cancelled' ? 'cancelled' : 'done';
    this.channel.deliver(this.deps.store.finish(row.device, row.id, state, { topic: row.replyTopic, payload: doneMessage(row.id, fields), correlation: row.correlation }));
    const { queue_ms, total_ms } = fields.timings;
    this.observer.onFinished({
      outcome: t.cached ? 'cached' : state,
      route: fields.route,
      queue_ms: t.cached ? undefined : queue_ms,
      ttft_ms: !t.cached && t.firstAt !== undefined ? fields.timings.ttft_ms : undefined,
      total_ms,
      completion_tokens: answer.usage.completion_tokens,
    });
  }

  /** `route`: 'none' for a refusal before the request was given to a route. */
  private finishError(row: StoredRequest, code: ErrorCode, message: string, route: RequestRoute = 'none'): void {
    this.errorsTotal++;
    this.deps.log.info(`request ${row.device}/${row.id}: ${code}: ${message}`);
    this.channel.deliver(this.deps.store.finish(row.device, row.id, 'error', { topic: row.replyTopic, payload: errorMessage(row.id, code, message), correlation: row.correlation }));
    this.observer.onFinished({ outcome: 'error', code, route, total_ms: Date.now() - row.receivedAt, completion_tokens: 0 });
  }

  private params(r: WireRequest): GenerateParams {
    const p: GenerateParams = { max_tokens: r.max_tokens ?? this.deps.config.limits.max_tokens };
    if (r.max_tokens === undefined) p.max_tokens_fits_context = true;
    if (r.prompt !== undefined) p.prompt = r.prompt;
    if (r.messages !== undefined) p.messages = r.messages;
    for (const k of ['temperature', 'top_p', 'top_k', 'min_p', 'seed'] as const) {
      if (r[k] !== undefined) p[k] = r[k];
    }
    if (r.stop !== undefined) p.stop = r.stop;
    return p;
  }

  private defaultModel(): string {
    return this.deps.models.keys().next().value ?? '';
  }

  private modelName(row: StoredRequest): string {
    return (JSON.parse(row.payload) as WireRequest).model ?? this.defaultModel();
  }
}

const keyOf = (device: string, id: string) => `${device}\u0000${id}`;
const round = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits;
