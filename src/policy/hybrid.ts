/**
 * HybridRunner: one validated request through access control, the route policy, and then the local
 * model or the upstream (behind the circuit breaker), with fallback to local when the upstream fails
 * and local is allowed and able. Every request leaves one audit record.
 *
 *   const reply = runner.run(request);          // throws EdgeError at once for a refusal (audited)
 *   for await (const ev of reply) {
 *     if (ev.type === 'chunk') send(ev.text);
 *     else tellClientToDiscard(ev.discarded_chars); // 'fallback': the cloud's partial text is void
 *   }
 *   const { text, route, route_reason, fallback, usage } = await reply.result;
 *
 * Nothing waits unbounded: the upstream client times out every phase, the local model ends at
 * max_tokens, and the request's signal (or leaving the loop) cancels either at once.
 *
 * A caller with its own scheduler (the daemon: queue, cache, durable replies) uses admit() for the
 * decision alone and runs it itself, writing the record through audit() when the request ends.
 */
import { EdgeError } from '../errors.js';
import type { AccessControl } from './access.js';
import type { AuditSink, RequestAudit, RequestOutcome } from './audit.js';
import type { CircuitBreaker, BreakerTicket } from './breaker.js';
import type { LocalRates, RequestedRoute, Route, RouteDecision, RoutePolicy } from './router.js';
import { PushStream } from './stream.js';
import { UpstreamError, type ChatMessage, type UpstreamReply, type UpstreamRequest } from './upstream.js';

/** What the runner asks of a local model; the engine's Model and the daemon's LocalModel both fit. */
export interface LocalModelPort {
  generate(params: LocalGenerateParams): LocalGeneration;
}

/** Sampling as the request gives it: the runner passes it to the local model unchanged. */
export interface SamplingParams {
  temperature?: number;
  top_p?: number;
  top_k?: number;
  min_p?: number;
  seed?: number;
  stop?: string[];
}

export interface LocalGenerateParams extends SamplingParams {
  prompt?: string;
  messages?: ChatMessage[];
  max_tokens: number;
  signal?: AbortSignal;
}

export interface LocalGeneration extends AsyncIterable<string> {
  result: Promise<{
    text: string;
    finish_reason: 'stop' | 'length' | 'cancelled';
    usage: { prompt_tokens: number; completion_tokens: number };
    /** When present, the rates are learned from them (engine GenerateTimings). */
    timings?: { prompt_ms: number; decode_tokens_per_s: number };
  }>;
}

/** What the runner asks of the upstream (UpstreamClient). */
export interface UpstreamPort {
  chat(request: UpstreamRequest, opts: { signal?: AbortSignal }): UpstreamReply;
}

/** A request the daemon has validated and counted. */
export interface HybridRequest extends SamplingParams {
  id: string;
  device: string;
  prompt?: string;
  messages?: ChatMessage[];
  /** A model name or class. */
  model?: string;
  max_tokens?: number;
  route?: RequestedRoute;
  local_only?: boolean;
  /** Bytes of the payload as received. */
  payload_bytes: number;
  /** Prompt tokens as the local tokenizer counts them. */
  prompt_tokens: number;
  /** The scheduler's estimate of the wait for a local slot (ms). */
  queue_wait_ms?: number;
  /** Cancels the request (finish_reason 'cancelled'). */
  signal?: AbortSignal;
  /** false: not counted against the device's rate limit (a request taken back after a restart). */
  rate_limited?: boolean;
}

/** A request let through access control and routed: what admit() hands a caller that runs it itself. */
export interface Admitted {
  decision: Extract<RouteDecision, { ok: true }>;
  /** The max_tokens to run with: the request's, or its roles' / limits' default. */
  max_tokens: number;
  /** The request gave no max_tokens: a local run may shrink it to the context's room. */
  max_tokens_is_default: boolean;
  /** The breaker ticket of a cloud route: report success, failure or cancel on it exactly once. */
  ticket: BreakerTicket | undefined;
  /** The request's audit record, filled so far; write it once the request ends (finishRecord). */
  record: RequestAudit;
}

export type ReplyEvent =
  | { type: 'chunk'; text: string }
  /** The upstream failed after `discarded_chars` of text were relayed; local starts over from here. */
  | { type: 'fallback'; route: 'local'; reason: string; discarded_chars: number };

export interface HybridResult {
  text: string;
  finish_reason: 'stop' | 'length' | 'cancelled';
  usage: { prompt_tokens: number; completion_tokens: number };
  route: Route;
  route_reason: string;
  /** The model that answered (a local model's name, or the upstream's). */
  model: string;
  /** The cloud failed and local answered. */
  fallback: boolean;
  timings: { ttft_ms: number; total_ms: number };
}

export class HybridReply extends PushStream<ReplyEvent, HybridResult> {
  constructor(
    /** The route decided up front (a fallback changes the result's route, not this). */
    readonly route: Route,
    readonly route_reason: string,
    readonly model: string,
    onReturn: () => void,
  ) {
    super(onReturn);
  }
}

export interface HybridRunnerOptions {
  access: AccessControl;
  policy: RoutePolicy;
  /** Local models by name (RoutePolicyConfig.local_models). */
  locals: Readonly<Record<string, LocalModelPort>>;
  /** Required when the policy has an upstream. */
  upstream?: UpstreamPort | undefined;
  breaker: CircuitBreaker;
  rates: LocalRates;
  audit: AuditSink;
  /** Keep prompt text in audit records (off by default). */
  audit_prompts?: boolean | undefined;
  now?: () => number;
}

export class HybridRunner {
  private readonly o: HybridRunnerOptions;
  private readonly now: () => number;

  constructor(opts: HybridRunnerOptions) {
    if (opts.policy.config.upstream && !opts.upstream) throw new EdgeError('E_CONFIG', 'the route policy has an upstream but no upstream client was given');
    for (const m of opts.policy.config.local_models) {
      if (!opts.locals[m.name]) throw new EdgeError('E_CONFIG', `local model ${m.name} is in the route policy but was not loaded`);
    }
    this.o = opts;
    this.now = opts.now ?? Date.now;
  }

  /** Decides and starts the request; a refusal (access or route) is audited and thrown as EdgeError. */
  run(req: HybridRequest): HybridReply {
    const started = Date.now();
    const { decision, max_tokens, ticket, record } = this.admit(req);
    const ctl = new AbortController();
    const onAbort = (): void => ctl.abort();
    if (req.signal?.aborted) ctl.abort();
    else req.signal?.addEventListener('abort', onAbort, { once: true });
    const reply = new HybridReply(decision.route, decision.reason, decision.model, () => ctl.abort());
    void this.execute(reply, req, decision, max_tokens, ticket, ctl.signal, record, started).finally(() =>
      req.signal?.removeEventListener('abort', onAbort),
    );
    return reply;
  }

  /**
   * Access control and the route policy, without running anything: for a caller with its own
   * scheduler (the daemon's queue). A refusal is audited and thrown as EdgeError; otherwise the caller
   * runs the decision and writes the record once the request ends.
   */
  admit(req: HybridRequest): Admitted {
    const record: RequestAudit = {
      type: 'request',
      time: this.now(),
      device: req.device,
      id: req.id,
      ...(req.model !== undefined ? { model: req.model } : {}),
      allowed: false,
      outcome: 'denied',
      prompt_tokens: req.prompt_tokens,
      ...(this.o.audit_prompts ? { prompt: promptText(req) } : {}),
    };
    const access = this.o.access.check({
      device: req.device,
      payload_bytes: req.payload_bytes,
      prompt_tokens: req.prompt_tokens,
      max_tokens: req.max_tokens,
      model: req.model,
      ...(req.rate_limited === false ? { rate_limited: false } : {}),
    });
    if (access.permissions) record.roles = access.permissions.roles;
    if (!access.allowed) throw this.deny(record, access.error);

    let decision: RouteDecision = this.decide(req, access.routes, access.local_only, access.max_tokens, !this.o.breaker.admits());
    let ticket: BreakerTicket | undefined;
    if (decision.ok && decision.route === 'cloud') {
      ticket = this.o.breaker.acquire();
      // admits() and acquire() run in the same tick, so this only guards against a shared breaker.
      if (!ticket) decision = this.decide(req, access.routes, access.local_only, access.max_tokens, true);
    }
    if (!decision.ok) throw this.deny(record, decision.error);

    record.allowed = true;
    record.route = decision.route;
    record.route_reason = decision.reason;
    record.model = decision.model;
    return { decision, max_tokens: access.max_tokens, max_tokens_is_default: req.max_tokens === undefined, ticket, record };
  }

  /** Writes a request's audit record (the audit sink of this runner). */
  audit(record: RequestAudit): void {
    this.o.audit.write(record);
  }

  private decide(req: HybridRequest, routes: Route[], roleLocalOnly: boolean, maxTokens: number, breakerOpen: boolean): RouteDecision {
    return this.o.policy.decide({
      route: req.route,
      local_only: req.local_only,
      model: req.model,
      prompt_tokens: req.prompt_tokens,
      max_tokens: maxTokens,
      max_tokens_is_default: req.max_tokens === undefined,
      allowed_routes: routes,
      role_local_only: roleLocalOnly,
      breaker_open: breakerOpen,
      queue_wait_ms: req.queue_wait_ms,
      rates: this.o.rates.snapshot(),
    });
  }

  private deny(record: RequestAudit, error: EdgeError): EdgeError {
    record.denied = { code: error.code, message: error.message };
    this.o.audit.write(record);
    return error;
  }

  private async execute(
    reply: HybridReply,
    req: HybridRequest,
    decision: Extract<RouteDecision, { ok: true }>,
    maxTokens: number,
    ticket: BreakerTicket | undefined,
    signal: AbortSignal,
    record: RequestAudit,
    started: number,
  ): Promise<void> {
    let firstChunkAt: number | undefined;
    const relay = (text: string): void => {
      firstChunkAt ??= Date.now();
      reply.push({ type: 'chunk', text });
    };
    const finish = (r: Omit<HybridResult, 'timings'>): void => {
      const end = Date.now();
      record.route = r.route;
      record.route_reason = r.route_reason;
      record.model = r.model;
      record.completion_tokens = r.usage.completion_tokens;
      record.prompt_tokens = r.usage.prompt_tokens;
      record.outcome = r.finish_reason === 'cancelled' ? 'cancelled' : 'ok';
      if (r.fallback) record.fallback = true;
      this.o.audit.write(record);
      reply.end({ ...r, timings: { ttft_ms: (firstChunkAt ?? end) - started, total_ms: end - started } });
    };
    try {
      if (decision.route === 'local') {
        finish(await this.runLocal(decision.model, req, maxTokens, signal, relay, decision.reason, false));
        return;
      }
      let relayed = 0;
      let cloudError: unknown;
      try {
        const cloud = this.o.upstream!.chat(upstreamRequest(req, decision.model, maxTokens), { signal });
        for await (const text of cloud) {
          relayed += text.length;
          relay(text);
        }
        const r = await cloud.result;
        if (r.finish_reason === 'cancelled') ticket?.cancel();
        else ticket?.success();
        finish({
          text: r.text,
          finish_reason: r.finish_reason,
          usage: r.usage ?? { prompt_tokens: req.prompt_tokens, completion_tokens: r.chunks },
          route: 'cloud',
          route_reason: decision.reason,
          model: r.model,
          fallback: false,
        });
        return;
      } catch (err) {
        ticket?.failure(err);
        cloudError = err;
      }
      const failed = `upstream failed (${failureOf(cloudError)})`;
      if (signal.aborted) {
        finish({ text: '', finish_reason: 'cancelled', usage: { prompt_tokens: req.prompt_tokens, completion_tokens: 0 }, route: 'cloud', route_reason: decision.reason, model: decision.model, fallback: false });
        return;
      }
      if (decision.fallback_model === undefined) {
        const why =
          req.route === 'cloud' ? 'route "cloud" was requested, so it was not answered locally'
          : this.o.policy.config.fallback_local === false ? 'policy fallback_local is off, so it was not answered locally'
          : `it cannot be answered locally (${decision.reason})`;
        const message = cloudError instanceof EdgeError ? cloudError.message : String(cloudError);
        throw new EdgeError('E_UPSTREAM', `${message}; ${why}: retry later`);
      }
      const reason = `${decision.reason}; ${failed}: fell back to local`;
      reply.push({ type: 'fallback', route: 'local', reason, discarded_chars: relayed });
      finish(await this.runLocal(decision.fallback_model, req, maxTokens, signal, relay, reason, true));
    } catch (err) {
      const e = err instanceof EdgeError ? err : new EdgeError('E_ENGINE', err instanceof Error ? err.message : String(err));
      record.outcome = 'error' satisfies RequestOutcome;
      record.error = { code: e.code, message: e.message };
      this.o.audit.write(record);
      reply.fail(e);
    }
  }

  private async runLocal(
    model: string,
    req: HybridRequest,
    maxTokens: number,
    signal: AbortSignal,
    relay: (text: string) => void,
    reason: string,
    fallback: boolean,
  ): Promise<Omit<HybridResult, 'timings'>> {
    const gen = this.o.locals[model]!.generate({
      ...(req.messages !== undefined ? { messages: req.messages } : { prompt: req.prompt ?? '' }),
      max_tokens: maxTokens,
      ...pick(req, ['temperature', 'top_p', 'top_k', 'min_p', 'seed', 'stop']),
      signal,
    });
    for await (const text of gen) relay(text);
    const r = await gen.result;
    if (r.timings && r.finish_reason !== 'cancelled') {
      this.o.rates.observe(model, { prompt_tokens: r.usage.prompt_tokens, prompt_ms: r.timings.prompt_ms, decode_tokens_per_s: r.timings.decode_tokens_per_s });
    }
    return { text: r.text, finish_reason: r.finish_reason, usage: r.usage, route: 'local', route_reason: reason, model, fallback };
  }
}

export function upstreamRequest(req: HybridRequest, model: string, maxTokens: number): UpstreamRequest {
  return {
    ...(req.messages !== undefined ? { messages: req.messages } : { prompt: req.prompt ?? '' }),
    model,
    max_tokens: maxTokens,
    ...pick(req, ['temperature', 'top_p', 'seed', 'stop']),
  };
}

/** Short words for a route_reason: "HTTP 500", "timeout", "stream cut". */
export function failureOf(err: unknown): string {
  if (err instanceof UpstreamError) {
    if (err.failure === 'http') return `HTTP ${err.status}`;
    if (err.failure === 'network' && /cut|mid-reply/.test(err.message)) return 'stream cut';
    return err.failure;
  }
  return err instanceof EdgeError ? err.code : 'error';
}

export function promptText(req: Pick<HybridRequest, 'prompt' | 'messages'>): string {
  return req.prompt ?? (req.messages ?? []).map((m) => `${m.role}: ${m.content}`).join('\n');
}

function pick<T extends object, K extends keyof T>(o: T, keys: readonly K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}
