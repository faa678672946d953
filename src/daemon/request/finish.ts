/**
 * Finish: a request's final reply in one commit (the request's state and the outbox row together,
 * store.finish), its audit record, its /metrics observation and the counters, then the reply handed
 * to the transport. Every way a request ends comes through here exactly once.
 */
import type { ErrorCode } from '../../errors.js';
import { doneMessage, embeddingsMessage, errorMessage, type DoneFields } from '../../protocol/codec.js';
import { mediaOf, type MediaSummary } from '../../protocol/media-parts.js';
import type { GenerateResult } from '../engine-port.js';
import type { RequestRoute } from '../request-observer.js';
import type { AbortReason, Job, RequestContext, RouteInfo } from './job.js';
import { requestTrace } from './trace.js';

/** How long it took: when a slot (or the upstream) took it, when its first text came, its decode rate. */
export interface RunTimes {
  cached: boolean;
  startedAt: number;
  firstAt: number | undefined;
  tokensPerS: number;
}

/** The answer (generated, cached, relayed or cancelled): the final `done` reply. */
export function finishDone(ctx: RequestContext, job: Job, modelName: string, answer: Pick<DoneFields, 'text' | 'finish_reason' | 'usage' | 'logprobs'>, t: RunTimes): void {
  const { row } = job;
  const now = Date.now();
  const route: RouteInfo = job.route ?? { route: 'local', route_reason: 'cancelled before it was routed', model: modelName };
  const fields: DoneFields = {
    ...answer,
    route: route.route,
    route_reason: route.route_reason,
    ...(route.fallback !== undefined ? { fallback: true as const, fallback_reason: route.fallback } : {}),
    cached: t.cached,
    model: modelName,
    ...(job.ab !== undefined ? { variant: job.ab.variant } : {}),
    ...(job.request.adapter !== undefined ? { adapter: job.request.adapter } : {}),
    node: ctx.config.node_id,
    timings: {
      queue_ms: t.startedAt - row.receivedAt,
      ttft_ms: (t.firstAt ?? now) - row.receivedAt,
      total_ms: now - row.receivedAt,
      tokens_per_s: round(t.tokensPerS, 2),
    },
    trace_id: job.trace.traceId,
    ...(job.request.trace ? { trace: requestTrace(job, route, t.cached, t.startedAt) } : {}),
  };
  const state = answer.finish_reason === 'cancelled' ? 'cancelled' : 'done';
  if (route.fallback !== undefined) ctx.counters.fallback++;
  if (ctx.jobs.delete(job.key) && job.admitted) {
    const rec = job.admitted.record;
    rec.route = route.route;
    rec.route_reason = route.route_reason;
    rec.model = modelName;
    rec.prompt_tokens = answer.usage.prompt_tokens;
    rec.completion_tokens = answer.usage.completion_tokens;
    rec.outcome = state === 'cancelled' ? 'cancelled' : 'ok';
    // What ab-report compares variants by: latency, decode rate, cache hits.
    rec.total_ms = fields.timings.total_ms;
    rec.tokens_per_s = fields.timings.tokens_per_s;
    rec.cached = t.cached;
    ctx.policy.admission.audit(rec);
  }
  ctx.channel.deliver(ctx.store.finish(row.device, row.id, state, { topic: row.replyTopic, payload: doneMessage(row.id, fields), correlation: row.correlation, traceparent: row.traceparent }));
  const { queue_ms, total_ms } = fields.timings;
  job.log.debug(`request ${row.device}/${row.id}: ${state} (${t.cached ? 'cache' : route.route}, ${answer.usage.completion_tokens} tokens, ${total_ms} ms)`);
  ctx.observer.onFinished({
    outcome: t.cached ? 'cached' : state,
    route: fields.route,
    queue_ms: t.cached ? undefined : queue_ms,
    ttft_ms: !t.cached && t.firstAt !== undefined ? fields.timings.ttft_ms : undefined,
    total_ms,
    completion_tokens: answer.usage.completion_tokens,
    trace_id: job.trace.traceId,
    ...(job.ab !== undefined ? { ab: job.ab } : {}),
  });
}

/** An embedding request's answer: the final `embeddings` reply, one vector per input. */
export function finishEmbeddings(ctx: RequestContext, job: Job, modelName: string, vectors: Float32Array[], promptTokens: number, startedAt: number): void {
  const { row } = job;
  const now = Date.now();
  if (ctx.jobs.delete(job.key) && job.admitted) {
    const rec = job.admitted.record;
    rec.model = modelName;
    rec.prompt_tokens = promptTokens;
    rec.completion_tokens = 0;
    rec.outcome = 'ok';
    ctx.policy.admission.audit(rec);
  }
  const payload = embeddingsMessage(row.id, {
    embeddings: vectors.map((v) => Array.from(v)),
    usage: { prompt_tokens: promptTokens },
    model: modelName,
    node: ctx.config.node_id,
    timings: { queue_ms: startedAt - row.receivedAt, total_ms: now - row.receivedAt },
  });
  ctx.channel.deliver(ctx.store.finish(row.device, row.id, 'done', { topic: row.replyTopic, payload, correlation: row.correlation }));
  ctx.observer.onFinished({ outcome: 'done', route: 'local', queue_ms: startedAt - row.receivedAt, total_ms: now - row.receivedAt, completion_tokens: 0 });
}

/**
 * The final `error` reply. `route`: 'none' for a refusal before the request was given to a route (an
 * admitted request's route is known).
 */
export function finishError(ctx: RequestContext, job: Job, code: ErrorCode, message: string, route: RequestRoute = 'none'): void {
  const { row } = job;
  ctx.counters.errors++;
  job.log.info(`request ${row.device}/${row.id}: ${code}: ${message}`);
  if (ctx.jobs.delete(job.key) && job.admitted) {
    // An admitted request that ended in an error; refusals were audited where they were decided.
    const rec = job.admitted.record;
    rec.outcome = 'error';
    rec.error = { code, message };
    rec.total_ms = Date.now() - row.receivedAt;
    ctx.policy.admission.audit(rec);
    if (route === 'none' && job.route) route = job.route.route;
  }
  const payload = errorMessage(row.id, code, message, job.trace.traceId);
  ctx.channel.deliver(ctx.store.finish(row.device, row.id, 'error', { topic: row.replyTopic, payload, correlation: row.correlation, traceparent: row.traceparent }));
  ctx.observer.onFinished({ outcome: 'error', code, route, total_ms: Date.now() - row.receivedAt, completion_tokens: 0, trace_id: job.trace.traceId, ...(job.ab !== undefined ? { ab: job.ab } : {}) });
}

/** A refusal before access control ran (limits the daemon checks itself): audited as denied. */
export function refuse(ctx: RequestContext, job: Job, code: ErrorCode, message: string): void {
  ctx.counters.denied++;
  auditRefusal(ctx, job.row.device, job.row.id, code, message, job.trace.traceId, mediaOf(job.request.messages));
  finishError(ctx, job, code, message);
}

/** `media`: the request's image and audio parts (kinds and sizes), when it was decoded. */
export function auditRefusal(ctx: RequestContext, device: string, id: string, code: ErrorCode, message: string, traceId: string, media: MediaSummary[] = []): void {
  ctx.policy.admission.audit({ type: 'request', time: Date.now(), device, id, trace_id: traceId, allowed: false, denied: { code, message }, outcome: 'denied', ...(media.length > 0 ? { media } : {}) });
}

/**
 * The end of a run (local or cloud), by how it ended: a shutdown leaves it queued in the store for the
 * next start (decided again, and audited once, then), a deadline is an error, anything else an answer.
 */
export function settle(
  ctx: RequestContext,
  job: Job,
  modelName: string,
  reason: AbortReason | undefined,
  result: GenerateResult | undefined,
  t: { startedAt: number; firstAt: number | undefined; partialText?: string },
): void {
  if (reason === 'shutdown') {
    ctx.store.requests.markQueued(job.row.device, job.row.id);
    ctx.jobs.delete(job.key);
    return;
  }
  if (reason === 'deadline') {
    finishError(ctx, job, 'E_DEADLINE', 'the deadline passed while the answer was being generated', 'local');
    return;
  }
  const answer = result
    ? { text: result.text, finish_reason: result.finish_reason, usage: result.usage, ...(result.logprobs ? { logprobs: result.logprobs } : {}) }
    : { text: t.partialText ?? '', finish_reason: 'cancelled' as const, usage: { prompt_tokens: 0, completion_tokens: 0 } };
  const finish = reason === 'cancel' ? ('cancelled' as const) : answer.finish_reason;
  const tokensPerS = result?.timings.decode_tokens_per_s ?? 0;
  if (tokensPerS > 0) {
    const rates = ctx.counters.recentRates;
    rates.push(tokensPerS);
    if (rates.length > 20) rates.shift();
  }
  finishDone(ctx, job, modelName, { ...answer, finish_reason: finish }, { cached: false, startedAt: t.startedAt, firstAt: t.firstAt, tokensPerS });
}

export const round = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits;
