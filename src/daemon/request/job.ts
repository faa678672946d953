/**
 * A request's one shape on its way through the daemon (intake -> admit -> run-local | run-cloud ->
 * finish): the durable row, the request decoded once, and what admission decided. Every stage takes
 * the Job and the RequestContext, the state they share (the reply channel, the jobs in flight, the
 * counters), and nothing else.
 */
import type { DaemonConfig } from '../../config.js';
import { withFields, type Logger } from '../../log.js';
import type { WireRequest } from '../../protocol/codec.js';
import { resumeTrace, traceparentOf, type TraceContext } from '../../protocol/trace-context.js';
import type { Admitted } from '../../policy/admission.js';
import type { ChosenVariant } from '../../policy/variants.js';
import type { RequestQueue } from '../../scheduler/request-queue.js';
import type { Store, StoredRequest } from '../../store/index.js';
import type { ReplyChannel } from '../../transport/mqtt/session.js';
import type { GenerateResult, LocalModel } from '../engine-port.js';
import type { DaemonPolicy } from '../hybrid-policy.js';
import type { RequestObserver } from '../request-observer.js';
import { ReplyStream } from './reply-stream.js';

/** Why a running request was stopped before its end. */
export type AbortReason = 'cancel' | 'deadline' | 'shutdown';

/** Where a request runs and why, as its final reply says. */
export interface RouteInfo {
  route: 'local' | 'cloud';
  route_reason: string;
  /** The model that runs it (a local model, or the upstream's). */
  model: string;
  /** Set when the upstream failed and local took over. */
  fallback?: string;
}

export interface Job {
  /** `device\0id`: the key of the queue and of the jobs in flight. */
  readonly key: string;
  /** As the store holds it (payload, reply address, times). */
  readonly row: StoredRequest;
  /** Decoded and validated once, at intake (or read back from the store at resume). */
  readonly request: WireRequest;
  /** Taken back after a restart: not rate-limited again, and queued even when the queue is full. */
  readonly resumed: boolean;
  /** Set by admit; a fallback changes it to the local model's route. */
  route?: RouteInfo;
  admitted?: Admitted;
  /** Its streamed reply, as the device has it (a no-op unless the request asked for `stream`). */
  readonly stream: ReplyStream;
  /** Set while it runs: aborting it stops the generation or the upstream relay. */
  abort?: AbortController;
  /** Its trace (row.traceparent names it); every line about it goes through `log`, bound to its trace_id. */
  readonly trace: TraceContext;
  readonly log: Logger;
  /** For a model name with A/B variants: that name, and the variant admit chose (the model it runs as). */
  ab?: ChosenVariant | undefined;
  /** What a `trace: true` reply reports: the cache lookup, and the engine's timings once it ran. */
  cache?: 'hit' | 'miss' | 'bypass';
  engine?: Pick<GenerateResult, 'timings' | 'steps'>;
}

/** The counters stats() and /metrics read; the finish stage keeps them. */
export interface Counters {
  requests: number;
  errors: number;
  denied: number;
  cloud: number;
  fallback: number;
  /** The last 20 local decode rates (tokens/s). */
  recentRates: number[];
  /** Moving average of a local generation's run time (ms), for the queue-wait estimate; 0 = unknown. */
  localRunMs: number;
}

export interface RequestDeps {
  config: DaemonConfig;
  store: Store;
  queue: RequestQueue;
  /** By name; the first is the default. */
  models: Map<string, LocalModel>;
  log: Logger;
  /** Told how each request ended (the /metrics counters). */
  observer: RequestObserver;
  /** Access control, routing, the upstream and its breaker. */
  policy: DaemonPolicy;
  /** Told after each upstream call reported to the breaker (the status topic shows its state). */
  onBreakerReport: () => void;
}

export interface RequestContext extends RequestDeps {
  /** Where replies leave; until a transport is attached, chunks go nowhere and finals wait in the outbox. */
  channel: ReplyChannel;
  /** Admitted and not finished yet, by key. */
  readonly jobs: Map<string, Job>;
  readonly counters: Counters;
  /** Off once the drain began: nothing new is started. */
  accepting: boolean;
  /** Cloud requests in flight (they hold no queue slot; drain waits for them too). */
  readonly cloudRuns: Set<Promise<void>>;
}

export const keyOf = (device: string, id: string) => `${device}\u0000${id}`;

/**
 * The job of a stored request: its trace resumed from the row (a row from before tracing starts a new
 * one), its log bound to the trace_id, its stream continuing from the row's mark.
 */
export function newJob(ctx: Pick<RequestContext, 'channel' | 'store' | 'log'>, row: StoredRequest, request: WireRequest, resumed: boolean): Job {
  const trace = resumeTrace(row.traceparent);
  const traced = { ...row, traceparent: traceparentOf(trace) };
  const stream = new ReplyStream(ctx, traced, request.stream === true, row.stream);
  return { key: keyOf(row.device, row.id), row: traced, request, resumed, stream, trace, log: withFields(ctx.log, { trace_id: trace.traceId }) };
}

export function defaultModel(ctx: Pick<RequestContext, 'models'>): string {
  return ctx.models.keys().next().value ?? '';
}

/** A run in progress: what started it and what can stop it. */
export interface Running {
  startedAt: number;
  signal: AbortSignal;
  /** Why it was stopped (a cancel, its deadline, the shutdown), or undefined while it was not. */
  outcome(): AbortReason | undefined;
  /** Disarms the deadline and forgets the abort: the run is over. */
  end(): void;
}

/** Marks a job running (in the store too) and arms what can stop it: a cancel, its deadline, the shutdown. */
export function startRunning(ctx: RequestContext, job: Job): Running {
  const { row } = job;
  const startedAt = Date.now();
  ctx.store.requests.markRunning(row.device, row.id, startedAt);
  const ac = new AbortController();
  job.abort = ac;
  const deadlineTimer =
    row.deadlineAt !== null ? setTimeout(() => ac.abort('deadline' satisfies AbortReason), Math.max(0, row.deadlineAt - startedAt)) : undefined;
  return {
    startedAt,
    signal: ac.signal,
    outcome: () => (ac.signal.aborted ? (ac.signal.reason as AbortReason) : undefined),
    end: () => {
      clearTimeout(deadlineTimer);
      if (job.abort === ac) delete job.abort;
    },
  };
}
