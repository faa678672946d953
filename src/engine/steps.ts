/**
 * A traced generation's steps (GenerateRequest.trace): for each generated token, when the decode loop
 * sampled it and how many sequences that step advanced. The addon hands them over as (at_ms, batch)
 * pairs with each batch of tokens, only to generations that asked.
 */

/** Per generated token, in order. */
export interface GenerationSteps {
  /** When the decode loop sampled it, in ms since the request reached the loop. */
  at_ms: number[];
  /** Sequences the step that sampled it advanced together (decoding or prefilling), this one included. */
  batch: number[];
}

export class StepRecorder {
  private readonly at: number[] = [];
  private readonly batch: number[] = [];

  /** The addon's pairs for the tokens of one callback. */
  push(pairs: Float64Array): void {
    for (let i = 0; i + 1 < pairs.length; i += 2) {
      this.at.push(pairs[i]!);
      this.batch.push(pairs[i + 1]!);
    }
  }

  /** The steps of the answer's first `tokens` tokens (tokens past a stop string are not part of it). */
  take(tokens: number): GenerationSteps {
    return { at_ms: this.at.slice(0, tokens), batch: this.batch.slice(0, tokens) };
  }
}
