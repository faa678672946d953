/**
 * Run cloud: the upstream's answer relayed chunk by chunk, behind the circuit breaker. When the
 * upstream fails and the decision names a fallback model, the request goes back to the queue and local
 * answers it (the device is told to discard what it got so far); otherwise the failure is the final
 * reply, saying why local did not answer. A cloud run holds no queue slot, but cancel, deadline and
 * drain reach it.
 */
import { EdgeError } from '../../errors.js';
import type { WireRequest } from '../../protocol/codec.js';
import { failureOf } from '../../policy/admission.js';
import type { UpstreamRequest } from '../../policy/upstream.js';
import { traceparentOf } from '../../protocol/trace-context.js';
import { finishDone, finishError, settle } from './finish.js';
import { startRunning, type Job, type RequestContext } from './job.js';
import { runLocal } from './run-local.js';

/** Starts relaying; drain waits for the run through ctx.cloudRuns. */
export function runCloud(ctx: RequestContext, job: Job): void {
  if (!ctx.accepting) {
    job.admitted!.ticket?.cancel();
    ctx.jobs.delete(job.key);
    return;
  }
  const run = relay(ctx, job).catch((err: unknown) => {
    job.log.error(`request ${job.row.device}/${job.row.id}: ${(err as Error).message}`);
  });
  ctx.cloudRuns.add(run);
  void run.finally(() => ctx.cloudRuns.delete(run));
}

/**
 * What the upstream is asked: the request's messages (image and audio parts as they came) or prompt,
 * and the sampling fields an OpenAI API takes. The OpenAI endpoint's requests fit too.
 */
export function upstreamRequest(r: Pick<WireRequest, 'prompt' | 'messages' | 'temperature' | 'top_p' | 'seed' | 'stop'>, model: string, maxTokens: number): UpstreamRequest {
  return {
    ...(r.messages !== undefined ? { messages: r.messages } : { prompt: r.prompt ?? '' }),
    model,
    max_tokens: maxTokens,
    ...(r.temperature !== undefined ? { temperature: r.temperature } : {}),
    ...(r.top_p !== undefined ? { top_p: r.top_p } : {}),
    ...(r.seed !== undefined ? { seed: r.seed } : {}),
    ...(r.stop !== undefined ? { stop: r.stop } : {}),
  };
}

async function relay(ctx: RequestContext, job: Job): Promise<void> {
  const { row, request: r } = job;
  const admitted = job.admitted!;
  const { decision, ticket } = admitted;
  const run = startRunning(ctx, job);
  const report = (f: () => void): void => {
    f();
    ctx.onBreakerReport();
  };
  let text = '';
  let firstAt: number | undefined;
  let failure: unknown;
  try {
    const reply = ctx.policy.upstream!.chat(upstreamRequest(r, decision.model, admitted.max_tokens), { signal: run.signal, traceparent: traceparentOf(job.trace) });
    // The upstream is never taken to repeat itself: a resumed request's device is told to start over.
    job.stream.begin(false);
    for await (const piece of reply) {
      firstAt ??= Date.now();
      text += piece;
      job.stream.piece(piece);
    }
    const result = await reply.result;
    // Stopped by the shutdown: the device keeps its text, and the next start continues it.
    if (run.outcome() !== 'shutdown') job.stream.end();
    const reason = run.outcome();
    report(() => (reason !== undefined || result.finish_reason === 'cancelled' ? ticket?.cancel() : ticket?.success()));
    run.end();
    if (reason === 'shutdown' || reason === 'deadline') return settle(ctx, job, decision.model, reason, undefined, { startedAt: run.startedAt, firstAt, partialText: text });
    ctx.counters.cloud++;
    const seconds = (Date.now() - (firstAt ?? run.startedAt)) / 1000;
    const usage = result.usage ?? { prompt_tokens: admitted.record.prompt_tokens ?? 0, completion_tokens: result.chunks };
    finishDone(
      ctx,
      job,
      result.model,
      { text: result.text, finish_reason: reason === 'cancel' ? 'cancelled' : result.finish_reason, usage },
      { cached: false, startedAt: run.startedAt, firstAt, tokensPerS: seconds > 0 ? usage.completion_tokens / seconds : 0 },
    );
    return;
  } catch (err) {
    failure = err;
  }
  // The upstream failed (or the request was stopped while it did).
  const reason = run.outcome();
  run.end();
  if (reason !== undefined) {
    report(() => ticket?.cancel());
    return settle(ctx, job, decision.model, reason, undefined, { startedAt: run.startedAt, firstAt, partialText: text });
  }
  report(() => ticket?.failure(failure));
  const message = failure instanceof EdgeError ? failure.message : String(failure);
  const failed = `upstream failed (${failureOf(failure)})`;
  if (decision.fallback_model === undefined) {
    const why =
      r.route === 'cloud' ? 'route "cloud" was requested, so it was not answered locally'
      : !ctx.config.policy.fallback_local ? 'policy.fallback_local is off, so it was not answered locally'
      : `it cannot be answered locally (${decision.reason})`;
    return finishError(ctx, job, 'E_UPSTREAM', `${message}; ${why}: retry later`);
  }
  job.log.info(`request ${row.device}/${row.id}: ${failed}: ${message}; answering with local model ${decision.fallback_model}`);
  job.route = { route: 'local', route_reason: `${decision.reason}; ${failed}: fell back to local`, model: decision.fallback_model, fallback: failed };
  admitted.record.fallback = true;
  job.stream.fallback(failed);
  ctx.store.requests.markQueued(row.device, row.id);
  // Already accepted: it goes into the queue even when the queue is full.
  runLocal(ctx, job, decision.fallback_model, true);
}
