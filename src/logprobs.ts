/**
 * Log-probabilities in answers, in the OpenAI chat shape: the wire type every layer shares (the
 * engine fills it, the MQTT codec and the OpenAI endpoint send it) and the one check of a request's
 * `logprobs` / `top_logprobs` fields (E_BAD_LOGPROBS).
 */
import { EdgeError } from './errors.js';

/** The most alternatives per token (OpenAI's limit, and the native decode loop's). */
export const MAX_TOP_LOGPROBS = 20;

/**
 * OpenAI reports -9999 for "as good as impossible"; JSON has no -Infinity, so a probability of 0 (an
 * alternative whose logit is -inf) is reported as this.
 */
export const LOGPROB_FLOOR = -9999;

export interface TopLogprob {
  /** The token's text (U+FFFD where it holds part of a UTF-8 character; `bytes` has them). */
  token: string;
  /** The token's id in the model's vocabulary (an edgellm addition to OpenAI's shape). */
  id: number;
  /** Natural log of the token's probability. */
  logprob: number;
  /** The UTF-8 bytes the token stands for. */
  bytes: number[];
}

export interface TokenLogprob extends TopLogprob {
  /** The most probable tokens, most probable first; [] when top_logprobs is 0. */
  top_logprobs: TopLogprob[];
}

/** OpenAI's request fields. */
export interface LogprobsRequest {
  logprobs?: boolean | null | undefined;
  top_logprobs?: number | null | undefined;
}

/**
 * How many alternatives to compute per token, or undefined when the request asked for no
 * log-probabilities. Throws E_BAD_LOGPROBS naming the bad field and what it takes.
 */
export function topLogprobsOf(r: LogprobsRequest): number | undefined {
  const { logprobs, top_logprobs: top } = r;
  if (logprobs !== undefined && logprobs !== null && typeof logprobs !== 'boolean') {
    throw badLogprobs(`logprobs must be true or false, got ${shown(logprobs)}`);
  }
  if (top !== undefined && top !== null) {
    if (typeof top !== 'number' || !Number.isInteger(top) || top < 0 || top > MAX_TOP_LOGPROBS) {
      throw badLogprobs(`top_logprobs must be a whole number from 0 to ${MAX_TOP_LOGPROBS}, got ${shown(top)}`);
    }
    if (logprobs !== true) throw badLogprobs('top_logprobs needs logprobs: true as well');
  }
  if (logprobs !== true) return undefined;
  return typeof top === 'number' ? top : 0;
}

export function badLogprobs(message: string): EdgeError {
  return new EdgeError('E_BAD_LOGPROBS', message);
}

function shown(v: unknown): string {
  return JSON.stringify(v) ?? typeof v;
}
