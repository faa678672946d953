/**
 * The MQTT request path, assembled: the session hands each message to intake (the RequestSink), and
 * the stages (intake -> admit -> run-local | run-cloud -> finish, each in its own file) share one
 * RequestContext. This class holds that context and what reaches across jobs: a device's cancel, the
 * drain at shutdown, and the figures of stats().
 */
import type { BreakerState } from '../../policy/breaker.js';
import type { IncomingRequest, ReplyChannel, RequestSink } from '../../transport/mqtt/session.js';
import type { UpstreamStatus } from '../hybrid-policy.js';
import { ignoreRequests } from '../request-observer.js';
import { finishDone, round } from './finish.js';
import { intake, resume } from './intake.js';
import { defaultModel, type AbortReason, type RequestContext, type RequestDeps } from './job.js';

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

/** Until a transport is attached, chunks go nowhere and finals wait in the outbox. */
const offline: ReplyChannel = { isOpen: () => false, chunk: () => undefined, deliver: () => undefined };

export class Responder implements RequestSink {
  private readonly ctx: RequestContext;

  constructor(deps: Omit<RequestDeps, 'observer' | 'onBreakerReport'> & Partial<Pick<RequestDeps, 'observer' | 'onBreakerReport'>>) {
    this.ctx = {
      ...deps,
      observer: deps.observer ?? ignoreRequests,
      onBreakerReport: deps.onBreakerReport ?? (() => undefined),
      channel: offline,
      jobs: new Map(),
      counters: { requests: 0, errors: 0, denied: 0, cloud: 0, fallback: 0, recentRates: [], localRunMs: 0 },
      accepting: true,
      cloudRuns: new Set(),
    };
  }

  attach(channel: ReplyChannel): void {
    this.ctx.channel = channel;
  }

  /**
   * Records and admits one request. Returns once every write has committed; throws only when the store
   * cannot be written (then the message must not be acknowledged).
   */
  receive(msg: IncomingRequest, defaultReplyTopic: string): void {
    intake(this.ctx, msg, defaultReplyTopic);
  }

  /** Takes back every request accepted but not answered before the last stop; returns how many. */
  resume(): number {
    return resume(this.ctx);
  }

  /** A device's cancel: a waiting request ends at once, a running one at its next token. */
  cancel(device: string, id: string): void {
    const { ctx } = this;
    const job = ctx.jobs.get(`${device}\u0000${id}`);
    if (!job) return;
    if (job.abort) {
      job.abort.abort('cancel' satisfies AbortReason);
      return;
    }
    if (ctx.queue.remove(job.key)) {
      finishDone(ctx, job, job.route?.model ?? job.request.model ?? defaultModel(ctx), { text: '', finish_reason: 'cancelled', usage: { prompt_tokens: 0, completion_tokens: 0 } }, {
        cached: false,
        startedAt: Date.now(),
        firstAt: undefined,
        tokensPerS: 0,
      });
    }
  }

  /**
   * Stops starting generations; running ones get `timeoutMs` to finish, then are stopped and left
   * queued in the store for the next start, as are the waiting ones.
   */
  async drain(timeoutMs: number): Promise<void> {
    const { ctx } = this;
    ctx.accepting = false;
    ctx.queue.pause();
    ctx.queue.clear();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([Promise.all([ctx.queue.idle(), this.cloudIdle()]), timeout]);
    clearTimeout(timer);
    for (const job of ctx.jobs.values()) job.abort?.abort('shutdown' satisfies AbortReason);
    await Promise.all([ctx.queue.idle(), this.cloudIdle()]);
  }

  private async cloudIdle(): Promise<void> {
    while (this.ctx.cloudRuns.size > 0) await Promise.allSettled([...this.ctx.cloudRuns]);
  }

  stats(): ResponderStats {
    const { queue, store, policy, counters: c } = this.ctx;
    const rates = c.recentRates;
    return {
      queue_depth: queue.depth,
      running: queue.running,
      requests_total: c.requests,
      errors_total: c.errors,
      cache_hit_rate: round(store.cache.hitRate(), 3),
      tokens_per_s: rates.length === 0 ? 0 : round(rates.reduce((a, b) => a + b, 0) / rates.length, 2),
      outbox: store.outbox.size(),
      cloud_total: c.cloud,
      fallback_total: c.fallback,
      denied_total: c.denied,
      breaker: policy.breakerState(),
      upstream: policy.upstreamStatus(),
    };
  }
}
