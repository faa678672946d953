/**
 * The drift signal: per model, the mean log-probability the model gives its prompts (each token given
 * its prefix: how surprising the inputs are to it) and its own generated tokens, over the last
 * DRIFT_WINDOW measured requests. Token-weighted: a long prompt counts for its tokens, a one-token one
 * barely moves it. Only a sampled fraction of requests is measured (metrics.drift_sample), since the
 * prompt's log-probabilities need the output layer at every prompt position.
 */

/** Requests per model the rolling means span. */
export const DRIFT_WINDOW = 200;

/** One measured request (GenerateResult.raw_logprobs): sums of natural-log probabilities and token counts. */
export interface RawLogprobSums {
  prompt_sum: number;
  prompt_tokens: number;
  completion_sum: number;
  completion_tokens: number;
}

/** The last DRIFT_WINDOW requests of one model, with running totals (a ring: O(1) per request). */
class ModelWindow {
  private readonly ring: RawLogprobSums[] = [];
  private head = 0;
  private readonly total: RawLogprobSums = { prompt_sum: 0, prompt_tokens: 0, completion_sum: 0, completion_tokens: 0 };
  samples = 0;

  add(m: RawLogprobSums): void {
    const old = this.ring.length < DRIFT_WINDOW ? undefined : this.ring[this.head];
    if (old) this.move(old, -1);
    if (old) this.ring[this.head] = m;
    else this.ring.push(m);
    this.head = (this.head + 1) % DRIFT_WINDOW;
    this.move(m, 1);
    this.samples++;
  }

  /** Mean log-probability per token; undefined before any token was measured. */
  mean(part: 'prompt' | 'completion'): number | undefined {
    const tokens = part === 'prompt' ? this.total.prompt_tokens : this.total.completion_tokens;
    if (tokens === 0) return undefined;
    return (part === 'prompt' ? this.total.prompt_sum : this.total.completion_sum) / tokens;
  }

  private move(m: RawLogprobSums, sign: 1 | -1): void {
    this.total.prompt_sum += sign * m.prompt_sum;
    this.total.prompt_tokens += sign * m.prompt_tokens;
    this.total.completion_sum += sign * m.completion_sum;
    this.total.completion_tokens += sign * m.completion_tokens;
  }
}

export class DriftWindows {
  private readonly models = new Map<string, ModelWindow>();

  add(model: string, m: RawLogprobSums): void {
    let w = this.models.get(model);
    if (!w) this.models.set(model, (w = new ModelWindow()));
    w.add(m);
  }

  /** [model, mean] for every model with measured tokens of that part. */
  means(part: 'prompt' | 'completion'): Array<[string, number]> {
    const out: Array<[string, number]> = [];
    for (const [model, w] of this.models) {
      const mean = w.mean(part);
      if (mean !== undefined) out.push([model, mean]);
    }
    return out;
  }

  samples(model: string): number {
    return this.models.get(model)?.samples ?? 0;
  }
}

/** Whether this request is measured: a fraction `rate` (0..1) of them, drawn by `random` (injectable for tests). */
export function drawDriftSample(rate: number, random: () => number = Math.random): boolean {
  return rate > 0 && random() < rate;
}
