/**
 * Log-probabilities of generated tokens in the OpenAI chat shape: per token its text, UTF-8 bytes,
 * natural-log probability and the most probable alternatives.
 *
 * The probabilities are of the distribution the token was drawn from (after penalties, top-k /
 * top-p / min-p and temperature); tokens the filters removed are never listed, so top_logprobs may
 * hold fewer entries than asked. Greedy decoding (temperature 0) reports the log-softmax of the
 * penalized logits: with penalties off, exactly what `edgellm logits` computes.
 */
import { EdgeError } from '../errors.js';
import type { NativeLogprobs } from './native.js';
import type { Tokenizer } from './tokenizer/index.js';

/** The most alternatives per token (OpenAI's limit, and the decode loop's). */
export const MAX_TOP_LOGPROBS = 20;

/**
 * OpenAI returns -9999 for "as good as impossible"; JSON has no -Infinity, so a probability of 0
 * (possible only for an alternative with a -inf logit) is reported as this.
 */
export const LOGPROB_FLOOR = -9999;

export interface TopLogprob {
  token: string;
  /** The token's id in the model's vocabulary (an edgellm addition to OpenAI's shape). */
  id: number;
  logprob: number;
  /** The UTF-8 bytes the token stands for: a token may hold part of a character. */
  bytes: number[];
}

export interface TokenLogprob extends TopLogprob {
  /** Most probable first; [] when top_logprobs is 0. */
  top_logprobs: TopLogprob[];
}

/** The request fields: OpenAI's `logprobs` and `top_logprobs`. */
export interface LogprobsRequest {
  logprobs?: boolean;
  top_logprobs?: number;
}

/**
 * The number of alternatives to compute per token, or undefined when the request asked for no
 * log-probabilities. Throws E_BAD_LOGPROBS naming the bad field.
 */
export function topLogprobsOf(r: LogprobsRequest): number | undefined {
  if (r.logprobs !== undefined && typeof r.logprobs !== 'boolean') {
    throw badLogprobs(`logprobs must be true or false, got ${JSON.stringify(r.logprobs) ?? typeof r.logprobs}`);
  }
  const top = r.top_logprobs;
  if (top !== undefined && top !== null) {
    if (typeof top !== 'number' || !Number.isInteger(top) || top < 0 || top > MAX_TOP_LOGPROBS) {
      throw badLogprobs(`top_logprobs must be a whole number from 0 to ${MAX_TOP_LOGPROBS}, got ${JSON.stringify(top) ?? typeof top}`);
    }
    if (r.logprobs !== true) throw badLogprobs('top_logprobs needs logprobs: true as well');
  }
  if (r.logprobs !== true) return undefined;
  return typeof top === 'number' ? top : 0;
}

function badLogprobs(message: string): EdgeError {
  return new EdgeError('E_BAD_LOGPROBS', message);
}

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
