/**
 * What the OpenAI-compatible API runs its requests on (the daemon implements it: src/daemon/local-chat.ts),
 * and what a generation gives back, in the shapes this transport needs and no more.
 */
import type { TokenLogprob } from '../../logprobs.js';
import type { TraceContext } from '../../protocol/trace-context.js';
import type { EmbeddingsRequest, EmbeddingsResult } from './openai-embeddings.js';
import type { ChatRequest } from './openai-request.js';

/** What an answer ends with, as this endpoint reports it (the daemon's GenerateResult fits). */
export interface GenerateResult {
  text: string;
  finish_reason: 'stop' | 'length' | 'cancelled';
  usage: { prompt_tokens: number; completion_tokens: number };
  logprobs?: { content: TokenLogprob[] };
}

/** Text pieces as they are decoded; `result` settles once the generation has ended. */
export interface Generation extends AsyncIterableIterator<string> {
  result: Promise<GenerateResult>;
  readonly logprobs?: readonly TokenLogprob[] | undefined; // with logprobs: an entry per token as it arrives
}

/** A generation holding a slot: the model that runs it and, for a model name with A/B variants, the variant. */
export type Started = { model: string; variant?: string | undefined; adapter?: string | undefined; generation: Generation };

/** Where requests run. */
export interface ChatBackend {
  /** The models a request may name; the first is the default. */
  models(): string[];
  /**
   * Admits a request and resolves once it holds a slot and the engine has accepted it (or, for a request
   * with image or audio parts, once the upstream call has started). Rejects with an EdgeError
   * (E_UNKNOWN_MODEL, E_QUEUE_FULL, E_PROMPT_TOO_LONG, E_BAD_REQUEST, E_UNAVAILABLE, E_NO_ROUTE), or with
   * `signal`'s reason when it aborts while the request waits. Aborting `signal` later ends the generation
   * 'cancelled'. The caller iterates the generation to its end (that is what frees the slot).
   */
  complete(request: ChatRequest, signal: AbortSignal, trace?: TraceContext): Promise<Started>;
  /** Embeds every input with an embedding model; rejects with an EdgeError (E_NOT_EMBEDDING_MODEL, E_INPUT_TOO_LONG...). */
  embed(request: EmbeddingsRequest, signal: AbortSignal): Promise<EmbeddingsResult>;
}
