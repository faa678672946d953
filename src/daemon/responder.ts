/**
 * Where a request is decided and answered: recorded durably, let through access control and routed
 * (the hybrid policy), then answered from the cache or queued for the engine (route local), or relayed
 * from the upstream chunk by chunk (route cloud, falling back to the queue when the upstream fails),
 * and its replies handed to the transport. `receive` does all its writes before it returns, so the
 * transport may acknowledge the message as soon as it does. Every request leaves one audit record.
 */
import type { DaemonConfig } from '../config.js';
import type { GenerateParams, GenerateResult, LocalModel } from './engine-port.js';
import type { Logger } from '../log.js';
import { ignoreRequests, type RequestObserver, type RequestRoute } from './request-observer.js';
import { EdgeError, type ErrorCode } from '../errors.js';
import type { RequestQueue } from '../scheduler/request-queue.js';
import { cacheKey, isDeterministic, type Store, type StoredRequest } from '../store/index.js';
import type { IncomingRequest, ReplyChannel } from '../transport/mqtt/session.js';
import { chunkMessage, decodeRequest, doneMessage, errorMessage, fallbackMessage, type DoneFields, type WireRequest } from '../protocol/codec.js';
import type { RequestAudit } from '../policy/audit.js';
import type { BreakerState } from '../policy/breaker.js';
import { failureOf, promptText, upstreamRequest, type Admitted } from '../policy/hybrid.js';
import type { DaemonPolicy, UpstreamStatus } from './hybrid-policy.js';

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
  /** Requests answered by the upstream, and cloud requests the local model answered after it failed. */
  cloud_total: number;
  fallback_total: number;
  /** Refused by access control or the route policy (E_FORBIDDEN, E_RATE_LIMITED, E_TOO_LARGE, E_NO_ROUTE, ...). */
  denied_total: number;
  /** The upstream circuit breaker ('none' without an upstream); breakerStateValue() makes it a gauge. */
  breaker: BreakerState | 'none';
  upstream: UpstreamStatus | null;
}

/** Where a request runs and why, as its final reply says. */
interface RouteInfo {
  route: 'local' | 'cloud';
  route_reason: string;
  /** The model that runs it (a local model, or the upstream's). */
  model: string;
  /** Set when the upstream failed and local took over. */
  fallback?: string;
}

/** An admitted request until its final reply: its route, audit record and streamed-chunk count. */
interface Pending {
  route: RouteInfo;
  record: RequestAudit;
  seq: number;
}

export class Responder {
  private channel: ReplyChannel = offline;
  private readonly active = new Map<string, AbortController>();
  private accepting = true;
  private requestsTotal = 0;
  private errorsTotal = 0;
  private readonly recentRates: number[] = [];
  private readonly pending = new Map<string, Pending>();
  /** Cloud requests in flight (they hold no queue slot; drain waits for them too). */
  private readonly cloudRuns = new Set<Promise<void>>();
  private cloudTotal = 0;
  private fallbackTotal = 0;
  private deniedTotal = 0;
  /** Moving average of a local generation's run time (ms), for the queue-wait estimate; 0 = unknown. */
  private localRunMs = 0;

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
      /** Access control, routing, the upstream and its breaker. */
      policy: DaemonPolicy;
      /** Told after each upstream call reported to the breaker (the status topic shows its state). */
      onBreakerReport?: () => void;
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
    const decoded = decodeRequest(msg.payload, { maxPayloadBytes: this.deps.config.limits.max_payload_bytes });
    const replyTopic = msg.responseTopic ?? (decoded.ok ? decoded.request.reply_to : decoded.replyTo) ?? defaultReplyTopic;
    const correlation = msg.correlation ?? null;
    this.requestsTotal++;
    if (!decoded.ok) {
      this.errorsTotal++;
      this.deniedTotal++;
      this.deps.log.info(`request from ${msg.device} refused: ${decoded.message}`);
      this.observer.onFinished({ outcome: 'error', code: decoded.code, route: 'none', total_ms: 0, completion_tokens: 0 });
      this.auditRefusal(msg.device, decoded.id ?? '', decoded.code, decoded.message);
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
      if (row) this.finishDone(row, JSON.parse(row.payload) as WireRequest, this.pending.get(key)?.route.model ?? this.modelName(row), {
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
    await Promise.race([Promise.all([this.deps.queue.idle(), this.cloudIdle()]), timeout]);
    clearTimeout(timer);
    for (const ac of this.active.values()) ac.abort('shutdown' satisfies AbortReason);
    await Promise.all([this.deps.queue.idle(), this.cloudIdle()]);
  }

  private async cloudIdle(): Promise<void> {
    while (this.cloudRuns.size > 0) await Promise.allSettled([...this.cloudRuns]);
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
      cloud_total: this.cloudTotal,
      fallback_total: this.fallbackTotal,
      denied_total: this.deniedTotal,
      breaker: this.deps.policy.breakerState(),
      upstream: this.deps.policy.upstreamStatus(),
    };
  }

  /**
   * Limits, access control and the route policy (audited when they refuse), then the cache and the
   * queue (local) or the upstream (cloud); every refusal is a final error reply.
   */
  private admit(row: StoredRequest, r: WireRequest, resumed: boolean): void {
    const { config, policy } = this.deps;
    // Before tokenizing: a prompt too large to be worth counting.
    const promptBytes = r.prompt !== undefined ? Buffer.byteLength(r.prompt) : (r.messages ?? []).reduce((n, m) => n + Buffer.byteLength(m.content), 0);
    if (promptBytes > config.limits.max_prompt_bytes) {
      return this.refuse(row, 'E_PROMPT_TOO_LONG', `the prompt is ${promptBytes} bytes; this node takes at most ${config.limits.max_prompt_bytes} (limits.max_prompt_bytes)`);
    }
    if (row.deadlineAt !== null && row.deadlineAt <= Date.now()) {
      return this.refuse(row, 'E_DEADLINE', 'the deadline passed before the request could start');
    }
    // Prompt tokens as the named local model (else the default one) counts them; a chat's template adds a few.
    const counter = (r.model !== undefined ? this.deps.models.get(r.model) : undefined) ?? this.deps.models.get(this.defaultModel());
    const text = promptText({ ...(r.prompt !== undefined ? { prompt: r.prompt } : {}), ...(r.messages !== undefined ? { messages: r.messages } : {}) });
    let promptTokens = 0;
    try {
      promptTokens = counter ? counter.countTokens(text) : 0;
    } catch (err) {
      // Never let one prompt stop the message from being acknowledged (it would come back forever).
      return this.refuse(row, 'E_BAD_REQUEST', `the prompt could not be tokenized (${(err as Error).message}): check its text`);
    }
    let admitted: Admitted;
    try {
      admitted = policy.runner.admit({
        id: r.id,
        device: row.device,
        ...(r.prompt !== undefined ? { prompt: r.prompt } : {}),
        ...(r.messages !== undefined ? { messages: r.messages } : {}),
        ...(r.model !== undefined ? { model: r.model } : {}),
        ...(r.max_tokens !== undefined ? { max_tokens: r.max_tokens } : {}),
        ...(r.route !== undefined ? { route: r.route } : {}),
        ...(r.local_only !== undefined ? { local_only: r.local_only } : {}),
        payload_bytes: Buffer.byteLength(row.payload),
        prompt_tokens: promptTokens,
        queue_wait_ms: this.queueWaitMs(),
        // Counted when it arrived; a request taken back after a restart is not counted again.
        rate_limited: !resumed,
      });
    } catch (err) {
      if (!(err instanceof EdgeError)) throw err;
      this.deniedTotal++;
      return this.finishError(row, err.code, err.message); // the runner audited the refusal
    }
    const { decision } = admitted;
    const key = keyOf(row.device, row.id);
    this.pending.set(key, { route: { route: decision.route, route_reason: decision.reason, model: decision.model }, record: admitted.record, seq: 0 });
    if (decision.route === 'cloud') return this.startCloud(row, r, admitted);
    this.queueLocal(row, r, decision.model, admitted.max_tokens, admitted.max_tokens_is_default, resumed);
  }

  /** The cache, else the queue, for a request the local model answers. */
  private queueLocal(row: StoredRequest, r: WireRequest, modelName: string, maxTokens: number, maxIsDefault: boolean, force: boolean): void {
    const { config, store, queue } = this.deps;
    const model = this.deps.models.get(modelName)!;
    const params = this.params(r, maxTokens, maxIsDefault);
    if (config.cache.enabled && isDeterministic(params)) {
      const hit = store.cache.get(cacheKey(model, params));
      this.observer.onCacheLookup(hit !== undefined);
      if (hit) {
        const now = Date.now();
        if (r.stream) this.channel.chunk(row.replyTopic, row.correlation, chunkMessage(row.id, this.nextSeq(row), hit.text));
        return this.finishDone(row, r, modelName, hit, { cached: true, startedAt: now, firstAt: now, tokensPerS: 0 });
      }
    }
    if (!this.accepting) {
      this.pending.delete(keyOf(row.device, row.id)); // draining: stays queued in the store for the next start
      return;
    }
    try {
      queue.submit(
        {
          key: keyOf(row.device, row.id),
          priority: r.priority ?? 5,
          deadlineAt: row.deadlineAt,
          run: () => this.generate(row, r, model, params),
          expire: () => this.finishError(row, 'E_DEADLINE', 'the deadline passed while the request waited for a free slot', 'local'),
        },
        { force },
      );
    } catch (err) {
      if (err instanceof EdgeError) return this.finishError(row, err.code, err.message, 'local');
      throw err;
    }
  }

  /** Waiting time for a local slot: the requests ahead of this one share the slots, each taking the average run. */
  private queueWaitMs(): number {
    const { queue } = this.deps;
    if (queue.running < this.deps.config.batch.max && queue.depth === 0) return 0;
    return Math.round(((queue.depth + 1) * this.localRunMs) / this.deps.config.batch.max);
  }

  /** Starts relaying the upstream's answer; it holds no queue slot, but cancel, deadline and drain reach it. */
  private startCloud(row: StoredRequest, r: WireRequest, admitted: Admitted): void {
    if (!this.accepting) {
      admitted.ticket?.cancel();
      this.pending.delete(keyOf(row.device, row.id));
      return;
    }
    const run = this.runCloud(row, r, admitted).catch((err: unknown) => {
      this.deps.log.error(`request ${row.device}/${row.id}: ${(err as Error).message}`);
    });
    this.cloudRuns.add(run);
    void run.finally(() => this.cloudRuns.delete(run));
  }

  private async runCloud(row: StoredRequest, r: WireRequest, admitted: Admitted): Promise<void> {
    const { store, policy } = this.deps;
    const { decision, ticket } = admitted;
    const { key, startedAt, ac, end, outcome } = this.begin(row);
    const report = (f: () => void): void => {
      f();
      this.deps.onBreakerReport?.();
    };
    let text = '';
    let firstAt: number | undefined;
    let failure: unknown;
    try {
      const reply = policy.upstream!.chat(
        upstreamRequest(
          {
            id: r.id,
            device: row.device,
            ...(r.prompt !== undefined ? { prompt: r.prompt } : {}),
            ...(r.messages !== undefined ? { messages: r.messages } : {}),
            ...pickSampling(r),
            payload_bytes: 0,
            prompt_tokens: 0,
          },
          decision.model,
          admitted.max_tokens,
        ),
        { signal: ac.signal },
      );
      for await (const piece of reply) {
        firstAt ??= Date.now();
        text += piece;
        if (r.stream) this.channel.chunk(row.replyTopic, row.correlation, chunkMessage(row.id, this.nextSeq(row), piece));
      }
      const result = await reply.result;
      const reason = outcome();
      report(() => (reason !== undefined || result.finish_reason === 'cancelled' ? ticket?.cancel() : ticket?.success()));
      end();
      if (reason === 'shutdown' || reason === 'deadline') return this.settle(row, r, decision.model, reason, undefined, { startedAt, firstAt, partialText: text });
      this.cloudTotal++;
      const seconds = (Date.now() - (firstAt ?? startedAt)) / 1000;
      const usage = result.usage ?? { prompt_tokens: admitted.record.prompt_tokens ?? 0, completion_tokens: result.chunks };
      this.finishDone(
        row,
        r,
        result.model,
        { text: result.text, finish_reason: reason === 'cancel' ? 'cancelled' : result.finish_reason, usage },
        { cached: false, startedAt, firstAt, tokensPerS: seconds > 0 ? usage.completion_tokens / seconds : 0 },
      );
      return;
    } catch (err) {
      failure = err;
    }
    // The upstream failed (or the request was stopped while it did).
    const reason = outcome();
    end();
    if (reason !== undefined) {
      report(() => ticket?.cancel());
      return this.settle(row, r, decision.model, reason, undefined, { startedAt, firstAt, partialText: text });
    }
    report(() => ticket?.failure(failure));
    const message = failure instanceof EdgeError ? failure.message : String(failure);
    const failed = `upstream failed (${failureOf(failure)})`;
    if (decision.fallback_model === undefined) {
      const why =
        r.route === 'cloud' ? 'route "cloud" was requested, so it was not answered locally'
        : !this.deps.config.policy.fallback_local ? 'policy.fallback_local is off, so it was not answered locally'
        : `it cannot be answered locally (${decision.reason})`;
      return this.finishError(row, 'E_UPSTREAM', `${message}; ${why}: retry later`);
    }
    this.deps.log.info(`request ${row.device}/${row.id}: ${failed}: ${message}; answering with local model ${decision.fallback_model}`);
    const p = this.pending.get(key);
    if (p) {
      p.route = { route: 'local', route_reason: `${decision.reason}; ${failed}: fell back to local`, model: decision.fallback_model, fallback: failed };
      p.record.fallback = true;
    }
    if (r.stream) this.channel.chunk(row.replyTopic, row.correlation, fallbackMessage(row.id, this.nextSeq(row), failed, text.length));
    store.requests.markQueued(row.device, row.id);
    // Already accepted: it goes into the queue even when the queue is full.
    this.queueLocal(row, r, decision.fallback_model, admitted.max_tokens, admitted.max_tokens_is_default, true);
  }

  /** Marks a request running and arms what can stop it: a cancel, its deadline, the shutdown. */
  private begin(row: StoredRequest): {
    key: string;
    startedAt: number;
    ac: AbortController;
    /** Disarms the deadline and forgets the abort: the run is over. */
    end: () => void;
    outcome: () => AbortReason | undefined;
  } {
    const key = keyOf(row.device, row.id);
    const startedAt = Date.now();
    this.deps.store.requests.markRunning(row.device, row.id, startedAt);
    const ac = new AbortController();
    this.active.set(key, ac);
    const deadlineTimer =
      row.deadlineAt !== null ? setTimeout(() => ac.abort('deadline' satisfies AbortReason), Math.max(0, row.deadlineAt - startedAt)) : undefined;
    const outcome = (): AbortReason | undefined => (ac.signal.aborted ? (ac.signal.reason as AbortReason) : undefined);
    const end = () => {
      clearTimeout(deadlineTimer);
      this.active.delete(key);
    };
    return { key, startedAt, ac, end, outcome };
  }

  private nextSeq(row: StoredRequest): number {
    const p = this.pending.get(keyOf(row.device, row.id));
    return p ? p.seq++ : 0;
  }

  private async generate(row: StoredRequest, r: WireRequest, model: LocalModel, params: GenerateParams): Promise<void> {
    const { store } = this.deps;
    const { key, startedAt, ac, end, outcome } = this.begin(row);
    let text = '';
    let firstAt: number | undefined;
    try {
      const generation = model.generate({ ...params, signal: ac.signal });
      for await (const piece of generation) {
        firstAt ??= Date.now();
        text += piece;
        if (r.stream && piece !== '') this.channel.chunk(row.replyTopic, row.correlation, chunkMessage(row.id, this.nextSeq(row), piece));
      }
      const result = await generation.result;
      if (outcome() === undefined && result.finish_reason !== 'cancelled') {
        // What the router's latency estimate learns from: this generation's measured speeds and run time.
        this.deps.policy.rates.observe(model.name, {
          prompt_tokens: result.usage.prompt_tokens,
          prompt_ms: result.timings.prompt_ms,
          decode_tokens_per_s: result.timings.decode_tokens_per_s,
        });
        const ran = Date.now() - startedAt;
        this.localRunMs = this.localRunMs === 0 ? ran : this.localRunMs + 0.2 * (ran - this.localRunMs);
      }
      this.settle(row, r, model.name, outcome(), result, { startedAt, firstAt });
      if (outcome() === undefined && result.finish_reason !== 'cancelled' && this.deps.config.cache.enabled && isDeterministic(params)) {
        store.cache.put(cacheKey(model, params), model.name, { text: result.text, finish_reason: result.finish_reason, usage: result.usage });
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
      end();
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
      this.pending.delete(keyOf(row.device, row.id)); // decided again (and audited once) at the next start
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
    const key = keyOf(row.device, row.id);
    const p = this.pending.get(key);
    const route: RouteInfo = p?.route ?? { route: 'local', route_reason: 'cancelled before it was routed', model: modelName };
    const fields: DoneFields = {
      ...answer,
      route: route.route,
      route_reason: route.route_reason,
      ...(route.fallback !== undefined ? { fallback: true as const, fallback_reason: route.fallback } : {}),
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
    if (route.fallback !== undefined) this.fallbackTotal++;
    if (p) {
      this.pending.delete(key);
      const rec = p.record;
      rec.route = route.route;
      rec.route_reason = route.route_reason;
      rec.model = modelName;
      rec.prompt_tokens = answer.usage.prompt_tokens;
      rec.completion_tokens = answer.usage.completion_tokens;
      rec.outcome = state === 'cancelled' ? 'cancelled' : 'ok';
      this.deps.policy.runner.audit(rec);
    }
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

  /** A refusal before access control ran (limits the responder checks itself): audited as denied. */
  private refuse(row: StoredRequest, code: ErrorCode, message: string): void {
    this.deniedTotal++;
    this.auditRefusal(row.device, row.id, code, message);
    this.finishError(row, code, message);
  }

  private auditRefusal(device: string, id: string, code: ErrorCode, message: string): void {
    this.deps.policy.runner.audit({ type: 'request', time: Date.now(), device, id, allowed: false, denied: { code, message }, outcome: 'denied' });
  }

  /** `route`: 'none' for a refusal before the request was given to a route (an admitted request's route is known). */
  private finishError(row: StoredRequest, code: ErrorCode, message: string, route: RequestRoute = 'none'): void {
    this.errorsTotal++;
    this.deps.log.info(`request ${row.device}/${row.id}: ${code}: ${message}`);
    const key = keyOf(row.device, row.id);
    const p = this.pending.get(key);
    if (p) {
      // An admitted request that ended in an error; refusals were audited where they were decided.
      this.pending.delete(key);
      p.record.outcome = 'error';
      p.record.error = { code, message };
      this.deps.policy.runner.audit(p.record);
      if (route === 'none') route = p.route.route;
    }
    this.channel.deliver(this.deps.store.finish(row.device, row.id, 'error', { topic: row.replyTopic, payload: errorMessage(row.id, code, message), correlation: row.correlation }));
    this.observer.onFinished({ outcome: 'error', code, route, total_ms: Date.now() - row.receivedAt, completion_tokens: 0 });
  }

  /** The engine's parameters: max_tokens as access control settled it (a default shrinks to the context's room). */
  private params(r: WireRequest, maxTokens: number, maxIsDefault: boolean): GenerateParams {
    const p: GenerateParams = { max_tokens: maxTokens };
    if (maxIsDefault) p.max_tokens_fits_context = true;
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

/** The sampling fields an upstream request carries. */
function pickSampling(r: WireRequest): { temperature?: number; top_p?: number; seed?: number; stop?: string[] } {
  return {
    ...(r.temperature !== undefined ? { temperature: r.temperature } : {}),
    ...(r.top_p !== undefined ? { top_p: r.top_p } : {}),
    ...(r.seed !== undefined ? { seed: r.seed } : {}),
    ...(r.stop !== undefined ? { stop: r.stop } : {}),
  };
}
const round = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits;
