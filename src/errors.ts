/**
 * Every failure a user can hit has a code and a message that says what to do.
 * Codes are stable strings; messages may change.
 */
export type ErrorCode =
  | 'E_ADDON_MISSING'
  | 'E_BAD_ARGUMENT'
  /** A request that breaks the API's rules (a chat message without content, an empty stop string): the message names the field. */
  | 'E_BAD_REQUEST'
  /**
   * logprobs / top_logprobs that cannot be served: top_logprobs outside 0..20, top_logprobs without
   * logprobs: true, or log-probabilities on a request that generates nothing (the message says which).
   */
  | 'E_BAD_LOGPROBS'
  | 'E_BENCH'
  | 'E_CONFIG'
  /** A model file that is truncated or breaks the GGUF format (the message names the key or tensor). */
  | 'E_MODEL_CORRUPT'
  /**
   * A model file edgellm cannot run as it is (GGUF v1, pre-GGUF, a tensor type such as Q4_K): convert it.
   * Also a model whose chat template does not parse or fails on a conversation.
   */
  | 'E_MODEL_UNSUPPORTED'
  /** A model path that does not exist or cannot be read. */
  | 'E_MODEL_NOT_FOUND'
  /** A Model used after close(). */
  | 'E_MODEL_CLOSED'
  /** A sequence reached the context size of its full-attention layers (raise contextSize, or load with sinks). */
  | 'E_CONTEXT_FULL'
  /** The engine could not allocate what it needed. */
  | 'E_OUT_OF_MEMORY'
  /** NOTIFY_SOCKET is set but the service manager's socket cannot be reached. */
  | 'E_SYSTEMD'
  /** An unexpected failure inside the native engine. */
  | 'E_ENGINE'
  /** A request whose deadline (deadline_ms, or its MQTT Message Expiry) passed before it was answered. */
  | 'E_DEADLINE'
  /** The admission queue is at limits.queue_depth: retry later, or raise the limit. */
  | 'E_QUEUE_FULL'
  /** A prompt too long to serve: over limits.max_prompt_bytes, or prompt + max_tokens beyond the context (the message gives the numbers). */
  | 'E_PROMPT_TOO_LONG'
  /** A request naming a model this node does not serve (the message lists the ones it does). */
  | 'E_UNKNOWN_MODEL'
  | 'E_UNKNOWN_ADAPTER'
  /** The state directory's SQLite database cannot be opened, migrated or written. */
  | 'E_STORE'
  /** The MQTT broker refused the connection or could not be reached. */
  | 'E_BROKER'
  /** `edgellm request` got no final reply within --timeout (the request was cancelled). */
  | 'E_TIMEOUT'
  /** A port the daemon must listen on (http.port, openai.port, broker.embedded.port) is taken by another process: the message names it. */
  | 'E_PORT_IN_USE'
  /** A feature this build does not have yet (the message says which). */
  | 'E_NOT_IMPLEMENTED'
  /** The device's roles do not allow what the request asks for (a route, a model): the message names the role and the grant to ask for. */
  | 'E_FORBIDDEN'
  /** The device sent more requests per minute than its roles allow: the message says when to retry. */
  | 'E_RATE_LIMITED'
  /** A payload, prompt or max_tokens above the configured limits: the message gives the numbers. */
  | 'E_TOO_LARGE'
  /**
   * No route this node has can serve the request now: route "cloud" on a node without an upstream or
   * with its circuit open, route "local" beyond the local context, or neither (the message says why for
   * each). Not a matter of permission (that is E_FORBIDDEN); retrying later or changing the request may help.
   */
  | 'E_NO_ROUTE'
  /** The upstream (OpenAI-compatible server) failed, timed out or broke its protocol; never carries the API key. */
  | 'E_UPSTREAM'
  /** The node is stopping and takes no new requests: retry on another node, or once it is back. */
  | 'E_UNAVAILABLE'
  /** An embedding asked of a generative model: embeddings come from encoders (bert, nomic-bert). */
  | 'E_NOT_EMBEDDING_MODEL'
  /** Text asked of an embedding model (an encoder): it has no next-token logits. */
  | 'E_NOT_GENERATIVE'
  /** An encoder whose pooling_type is none: the file defines no embedding of a whole input. */
  | 'E_NO_POOLING'
  /** An embedding of nothing (an empty string or no tokens). */
  | 'E_EMPTY_INPUT'
  /** An input longer than the encoder reads at once (its context_length, in tokens): split it. */
  | 'E_INPUT_TOO_LONG'
  /** A request's `variant` is not one of the A/B variants its model name has (the message lists them). */
  | 'E_UNKNOWN_VARIANT';

export class EdgeError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EdgeError';
    this.code = code;
  }
}

/**
 * Turns a `{code, message}` error thrown by the native addon into an EdgeError. A native error
 * without a code is an unexpected engine failure (E_ENGINE), whichever call raised it.
 */
export function fromNative(err: unknown): EdgeError {
  if (err instanceof EdgeError) return err;
  if (err instanceof Error) {
    const code = (err as Error & { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('E_')) {
      return new EdgeError(code as ErrorCode, err.message, { cause: err });
    }
    return new EdgeError('E_ENGINE', err.message, { cause: err });
  }
  return new EdgeError('E_ENGINE', String(err));
}
