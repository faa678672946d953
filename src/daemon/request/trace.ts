/**
 * The `trace` object of a final reply (a request's `trace: true`): the route and why, the cache's
 * outcome, the queue wait, and for a local run the engine's prefill time, the spacing of its tokens
 * and the batch sizes of the decode steps that made them. Built from what the stages left on the Job.
 */
import type { RequestTrace } from '../../protocol/codec.js';
import type { GenerationSteps } from '../engine-port.js';
import type { Job, RouteInfo } from './job.js';

export function requestTrace(job: Job, route: RouteInfo, cached: boolean, startedAt: number): RequestTrace {
  if (cached) {
    // Nothing ran: the answer was stored by an earlier request, whose timings are not this one's.
    return { route: 'cache', route_reason: `answered from the cache (model ${route.model})`, ...variantOf(job), cache: 'hit', queue_wait_ms: 0 };
  }
  const engine = job.engine;
  const trace: RequestTrace = {
    route: route.route,
    route_reason: route.route_reason,
    ...variantOf(job),
    cache: job.cache ?? 'bypass',
    queue_wait_ms: Math.max(0, startedAt - job.row.receivedAt) + roundMs(engine?.timings.queue_ms ?? 0),
  };
  if (engine === undefined) return trace; // the upstream's answer, or a run that never reached the engine
  trace.prefill_ms = roundMs(engine.timings.prompt_ms);
  if (engine.steps) {
    const gaps = tokenGaps(engine.steps);
    if (gaps.length > 0) trace.token_ms = { p50: roundMs(percentile(gaps, 0.5)), p95: roundMs(percentile(gaps, 0.95)), tokens: engine.steps.at_ms.length };
    trace.batch_sizes = batchSizes(engine.steps);
  }
  return trace;
}

const variantOf = (job: Job) => (job.ab !== undefined ? { variant: job.ab.variant } : {});

/** Milliseconds between consecutive tokens (one fewer than the tokens). */
function tokenGaps(steps: GenerationSteps): number[] {
  const gaps: number[] = [];
  for (let i = 1; i < steps.at_ms.length; i++) gaps.push(Math.max(0, steps.at_ms[i]! - steps.at_ms[i - 1]!));
  return gaps;
}

/** Nearest-rank percentile (q in (0, 1]) of a non-empty list. */
export function percentile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

/** Steps per batch size, smallest size first. */
function batchSizes(steps: GenerationSteps): { size: number; steps: number }[] {
  const counts = new Map<number, number>();
  for (const b of steps.batch) counts.set(b, (counts.get(b) ?? 0) + 1);
  return [...counts].sort((a, b) => a[0] - b[0]).map(([size, n]) => ({ size, steps: n }));
}

/** Hundredths of a millisecond: a tiny model's token takes a few of them. */
const roundMs = (ms: number) => Math.round(ms * 100) / 100;
