/**
 * What the responder tells whoever watches it (the /metrics module) about each request, so the
 * responder itself never deals with metric types. Times are milliseconds since the request arrived.
 */
import type { ErrorCode } from '../errors.js';
import type { ChosenVariant } from '../policy/variants.js';
import type { RawLogprobSums } from './drift.js';

/**
 * How a request ended: `done` generated (any finish_reason but cancelled), `cached` answered from the
 * cache, `cancelled` by its device (waiting or running), `error` with `code`.
 */
export type RequestOutcome = 'done' | 'cached' | 'cancelled' | 'error';

/** Where it was (to be) served; `none` when it was refused before a route was chosen (bad request, unknown model, over the limits). */
export type RequestRoute = 'local' | 'cloud' | 'none';

export interface FinishedRequest {
  outcome: RequestOutcome;
  /** Only for outcome 'error'. */
  code?: ErrorCode | undefined;
  route: RequestRoute;
  /** Until a slot took it, or until a cancel ended its wait; absent for refusals and cached answers. */
  queue_ms?: number | undefined;
  /** Until its first generated text; absent when none came and for cached answers. */
  ttft_ms?: number | undefined;
  /** Until its final reply. */
  total_ms: number;
  /** Tokens in the answer (a cached answer's are not generated again). */
  completion_tokens: number;
  /** The request's trace (the metrics' exemplars name it). */
  trace_id?: string | undefined;
  /** For a model name with A/B variants: that name and the variant that served it. */
  ab?: ChosenVariant | undefined;
}

export interface RequestObserver {
  /** Once per request, when its final reply (or refusal) is committed. */
  onFinished(r: FinishedRequest): void;
  /** A deterministic request looked up in the answer cache. */
  onCacheLookup(hit: boolean): void;
  /** A local generation sampled for the drift signal: its prompt and completion scored under the model. */
  onDriftSample(model: string, m: RawLogprobSums): void;
}

export const ignoreRequests: RequestObserver = { onFinished: () => undefined, onCacheLookup: () => undefined, onDriftSample: () => undefined };
