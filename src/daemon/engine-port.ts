/**
 * What the daemon needs from the engine, and nothing more. The real implementation will be an adapter
 * over the engine's generate API; tests use a deterministic fake (test/helpers/fake-model.ts).
 */

export interface GenerateParams {
  prompt?: string;
  messages?: { role: string; content: string }[];
  max_tokens?: number;
  /**
   * max_tokens is this node's default (limits.max_tokens), not the device's ask: when the context has
   * less room after the prompt, generate what fits instead of refusing with E_PROMPT_TOO_LONG.
   */
  max_tokens_fits_context?: boolean;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  min_p?: number;
  seed?: number;
  /** -2 to 2, llama.cpp's: over the last 64 tokens, the prompt's included (the OpenAI-compatible API's). */
  presence_penalty?: number;
  frequency_penalty?: number;
  stop?: string[];
  /** Aborting it ends the generation with finish_reason 'cancelled' (the reason is the caller's to keep). */
  signal?: AbortSignal;
}

export interface GenerateResult {
  text: string;
  finish_reason: 'stop' | 'length' | 'cancelled';
  usage: { prompt_tokens: number; completion_tokens: number };
  /** Milliseconds, measured by the engine from the generate() call. */
  timings: { queue_ms: number; prompt_ms: number; ttft_ms: number; total_ms: number; decode_tokens_per_s: number };
}

/** Streams text pieces as they are decoded; `result` settles once the generation has ended. */
export interface Generation extends AsyncIterableIterator<string> {
  result: Promise<GenerateResult>;
}

export interface LocalModel {
  readonly name: string;
  /** Tokens one sequence may hold (prompt + completion). */
  readonly contextSize: number;
  countTokens(text: string): number;
  generate(p: GenerateParams): Generation;
  close(): Promise<void>;
}

/** Opens the model file a config names; the Service calls it once per model at start. */
export type ModelOpener = (path: string) => Promise<LocalModel>;
