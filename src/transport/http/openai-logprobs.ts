/**
 * choices[].logprobs as OpenAI's chat completions send it: {content: [{token, logprob, bytes,
 * top_logprobs: [{token, logprob, bytes}]}], refusal: null}, or null when none were asked for. The
 * token ids edgellm adds on MQTT are left out here: this endpoint's shape is exactly OpenAI's.
 */
import type { TokenLogprob, TopLogprob } from '../../logprobs.js';

export type { TokenLogprob } from '../../logprobs.js';

const entry = (t: TopLogprob) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes });

export function wireLogprobs(tokens: readonly TokenLogprob[] | undefined) {
  if (tokens === undefined) return null;
  return { content: tokens.map((t) => ({ ...entry(t), top_logprobs: t.top_logprobs.map(entry) })), refusal: null };
}

/**
 * A stream's position in a generation's growing list of token logprobs: each content chunk carries
 * the tokens that arrived since the previous one (they may run ahead of the text, which holds back
 * partial characters and stop strings); the finish chunk carries what is left of the final list.
 */
export class LogprobCursor {
  private sent = 0;

  take(tokens: readonly TokenLogprob[] | undefined): TokenLogprob[] | undefined {
    if (tokens === undefined) return undefined;
    const fresh = tokens.slice(this.sent);
    this.sent = tokens.length;
    return fresh;
  }

  rest(final: readonly TokenLogprob[] | undefined): TokenLogprob[] | undefined {
    if (final === undefined) return undefined;
    return final.slice(this.sent);
  }
}
