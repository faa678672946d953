/**
 * Run local: the answer cache, else a slot in the RequestQueue and the engine; the text streams to the
 * device as it is decoded, and the end of the run goes to finish. What the router's latency estimate
 * learns (decode rates, run times) is measured here.
 */
import { EdgeError } from '../../errors.js';
import { cacheKey, isDeterministic } from '../../store/index.js';
import { drawDriftSample } from '../drift.js';
import { generateParams, type GenerateParams, type LocalModel } from '../engine-port.js';
import { finishDone, finishError, settle } from './finish.js';
import { startRunning, type Job, type RequestContext } from './job.js';

/** A local run of `modelName`; `force` queues it even when the queue is full (it was accepted already). */
export function runLocal(ctx: RequestContext, job: Job, modelName: string, force: boolean): void {
  const { config, store, queue } = ctx;
  const { row, request: r, admitted } = job;
  const model = ctx.models.get(modelName)!;
  const params = generateParams(r, admitted!.max_tokens, admitted!.max_tokens_is_default);
  job.cache = 'bypass';
  // The cache keeps text only: a request for logprobs is always generated (and not cached).
  if (config.cache.enabled && isDeterministic(params) && !params.logprobs) {
    const hit = store.cache.get(cacheKey(model, params));
    ctx.observer.onCacheLookup(hit !== undefined);
    job.cache = hit ? 'hit' : 'miss';
    if (hit) {
      const now = Date.now();
      job.stream.begin(true);
      job.stream.piece(hit.text);
      job.stream.end();
      return finishDone(ctx, job, modelName, hit, { cached: true, startedAt: now, firstAt: now, tokensPerS: 0 });
    }
  }
  if (!ctx.accepting) {
    ctx.jobs.delete(job.key); // draining: stays queued in the store for the next start
    return;
  }
  try {
    queue.submit(
      {
        key: job.key,
        priority: r.priority ?? 5,
        deadlineAt: row.deadlineAt,
        run: () => generate(ctx, job, model, { ...params, ...(drawDriftSample(config.metrics.drift_sample) ? { raw_logprobs: true } : {}) }),
        expire: () => finishError(ctx, job, 'E_DEADLINE', 'the deadline passed while the request waited for a free slot', 'local'),
      },
      { force },
    );
  } catch (err) {
    if (err instanceof EdgeError) return finishError(ctx, job, err.code, err.message, 'local');
    throw err;
  }
}

/**
 * Waiting time for a local slot: the requests ahead of this one share the slots, each taking the average
 * run. On an idle node with a batching window the request is held, at most batch.window_ms.
 */
export function queueWaitMs(ctx: Pick<RequestContext, 'queue' | 'config' | 'counters'>): number {
  const { queue } = ctx;
  const slots = ctx.config.batch.max;
  if (queue.running === 0 && ctx.config.batch.window_ms > 0) return ctx.config.batch.window_ms;
  if (queue.running < slots && queue.depth === 0) return 0;
  return Math.round(((queue.depth + 1) * ctx.counters.localRunMs) / slots);
}

/** The engine's run, in a queue slot. */
async function generate(ctx: RequestContext, job: Job, model: LocalModel, params: GenerateParams): Promise<void> {
  const { row, request: r } = job;
  const run = startRunning(ctx, job);
  let text = '';
  let firstAt: number | undefined;
  let scored = 0; // tokens whose logprobs a chunk carried
  try {
    const generation = model.generate({ ...params, signal: run.signal, ...(r.trace ? { trace: true } : {}) });
    // Greedy or seeded: a resumed request regenerates what its device already has, silently.
    job.stream.begin(isDeterministic(params));
    for await (const piece of generation) {
      firstAt ??= Date.now();
      text += piece;
      const tokens = generation.logprobs?.slice(scored);
      scored += tokens?.length ?? 0;
      job.stream.piece(piece, tokens);
    }
    const result = await generation.result;
    job.engine = result;
    if (result.raw_logprobs) ctx.observer.onDriftSample(model.name, result.raw_logprobs);
    // Stopped by the shutdown: the device keeps its text, and the next start continues it.
    if (run.outcome() !== 'shutdown') job.stream.end();
    const complete = run.outcome() === undefined && result.finish_reason !== 'cancelled';
    if (complete) {
      // What the router's latency estimate learns from: this generation's measured speeds and run time.
      ctx.policy.rates.observe(model.name, {
        prompt_tokens: result.usage.prompt_tokens,
        prompt_ms: result.timings.prompt_ms,
        decode_tokens_per_s: result.timings.decode_tokens_per_s,
      });
      const ran = Date.now() - run.startedAt;
      const c = ctx.counters;
      c.localRunMs = c.localRunMs === 0 ? ran : c.localRunMs + 0.2 * (ran - c.localRunMs);
    }
    settle(ctx, job, model.name, run.outcome(), result, { startedAt: run.startedAt, firstAt });
    if (run.outcome() === undefined && result.finish_reason !== 'cancelled' && ctx.config.cache.enabled && isDeterministic(params) && !params.logprobs) {
      ctx.store.cache.put(cacheKey(model, params), model.name, { text: result.text, finish_reason: result.finish_reason, usage: result.usage });
    }
  } catch (err) {
    const reason = run.outcome();
    if (reason !== undefined) {
      settle(ctx, job, model.name, reason, undefined, { startedAt: run.startedAt, firstAt, partialText: text });
    } else {
      const e = err instanceof EdgeError ? err : new EdgeError('E_ENGINE', `the engine failed: ${(err as Error).message}`, { cause: err });
      job.log.warn(`request ${row.device}/${row.id} failed: ${e.code}: ${e.message}`);
      finishError(ctx, job, e.code, e.message, 'local');
    }
  } finally {
    run.end();
  }
}
