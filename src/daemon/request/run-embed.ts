/**
 * Run embed: an embedding request (op "embed") in a queue slot like a generation (so it waits in the
 * same place, under the same deadline and cancel), each input embedded in turn by the local model,
 * then the `embeddings` reply from finish. Never cached and never sent upstream.
 */
import { EdgeError } from '../../errors.js';
import { embedInputs } from '../../protocol/codec.js';
import type { LocalModel } from '../engine-port.js';
import { finishEmbeddings, finishError, settle } from './finish.js';
import { startRunning, type Job, type RequestContext } from './job.js';

export function runEmbed(ctx: RequestContext, job: Job, modelName: string): void {
  const model = ctx.models.get(modelName)!;
  if (!ctx.accepting) {
    ctx.jobs.delete(job.key); // draining: stays queued in the store for the next start
    return;
  }
  try {
    ctx.queue.submit(
      {
        key: job.key,
        priority: job.request.priority ?? 5,
        deadlineAt: job.row.deadlineAt,
        run: () => embed(ctx, job, model),
        expire: () => finishError(ctx, job, 'E_DEADLINE', 'the deadline passed while the request waited for a free slot', 'local'),
      },
      { force: job.resumed },
    );
  } catch (err) {
    if (err instanceof EdgeError) return finishError(ctx, job, err.code, err.message, 'local');
    throw err;
  }
}

async function embed(ctx: RequestContext, job: Job, model: LocalModel): Promise<void> {
  const run = startRunning(ctx, job);
  try {
    const vectors: Float32Array[] = [];
    let tokens = 0;
    for (const input of embedInputs(job.request)) {
      if (run.outcome() !== undefined) break;
      const r = await model.embed(input);
      vectors.push(r.embedding);
      tokens += r.tokens;
    }
    const reason = run.outcome();
    // A cancel, the deadline or the shutdown between inputs: no partial list of vectors is an answer.
    if (reason !== undefined) return settle(ctx, job, model.name, reason, undefined, { startedAt: run.startedAt, firstAt: undefined });
    finishEmbeddings(ctx, job, model.name, vectors, tokens, run.startedAt);
  } catch (err) {
    const e = err instanceof EdgeError ? err : new EdgeError('E_ENGINE', `the engine failed: ${(err as Error).message}`, { cause: err });
    ctx.log.info(`embedding request ${job.row.device}/${job.row.id} failed: ${e.code}: ${e.message}`);
    finishError(ctx, job, e.code, e.message, 'local');
  } finally {
    run.end();
  }
}
