/**
 * Log-probabilities of generated tokens in the OpenAI chat shape: per token its text, UTF-8 bytes,
 * natural-log probability and the most probable alternatives.
 *
 * The probabilities are of the distribution the token was drawn from (after penalties, top-k /
 * top-p / min-p and temperature); tokens the filters removed are never listed, so top_logprobs may
 * hold fewer entries than asked. Greedy decoding (temperature 0) reports the log-softmax of the
 * penalized logits: with penalties off, exactly what `edgellm logits` computes.
 */
import { LOGPROB_FLOOR, type TokenLogprob, type TopLogprob } from '../logprobs.js';
import type { NativeLogprobs } from './native.js';
import type { Tokenizer } from './tokenizer/index.js';

export { MAX_TOP_LOGPROBS, topLogprobsOf, type LogprobsRequest, type TokenLogprob, type TopLogprob } from '../logprobs.js';

/** Turns the addon's arrays for one delivery into OpenAI entries, appended to `out`. */
export class LogprobReader {
  private readonly text = new TextDecoder('utf-8', { fatal: false });

  constructor(private readonly tokenizer: Tokenizer) {}

  append(ids: Int32Array, native: NativeLogprobs, out: TokenLogprob[]): void {
    for (let i = 0; i < ids.length; i++) {
      const top: TopLogprob[] = [];
      for (let j = 0; j < native.top; j++) {
        const id = native.top_ids[i * native.top + j]!;
        if (id < 0) break;
        top.push(this.entry(id, native.top_logprobs[i * native.top + j]!));
      }
      out.push({ ...this.entry(ids[i]!, native.logprob[i]!), top_logprobs: top });
    }
  }

  private entry(id: number, logprob: number): TopLogprob {
    const bytes = this.tokenizer.pieceBytes(id);
    return { token: this.text.decode(bytes), id, logprob: Math.max(logprob, LOGPROB_FLOOR), bytes: Array.from(bytes) };
  }
}
