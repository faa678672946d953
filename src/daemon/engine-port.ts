/**
 * What the daemon needs from the engine, and nothing more: local-model.ts adapts the engine's Model to
 * it; tests use a deterministic fake (test/helpers/fake-model.ts). generateParams() is the one place a
 * request's fields become the engine's parameters, for MQTT and the OpenAI endpoint alike.
 */
import type { GenerationSteps } from '../engine/steps.js';
import { EdgeError } from '../errors.js';
import type { TokenLogprob } from '../logprobs.js';
import { textMessages, textOf, type MessageContent } from '../protocol/media-parts.js';

/** Per generated token (a `trace` request): when it was sampled, and its decode step's sequences. */
export type { GenerationSteps };

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
  /** Per generated token its log-probability and top_logprobs (0..20) alternatives (src/logprobs.ts). */
  logprobs?: boolean;
  top_logprobs?: number;
  /** Measure the model's own log-probabilities of prompt and completion (the drift signal; slower prefill). */
  raw_logprobs?: boolean;
  /** Aborting it ends the generation with finish_reason 'cancelled' (the reason is the caller's to keep). */
  signal?: AbortSignal;
  /** Record `steps` in the result (a request's `trace: true`); not part of what the answer cache keys on. */
  trace?: boolean;
  /** A LoRA adapter of the model (config adapters.MODEL[].name) to run with; E_UNKNOWN_ADAPTER when it has none of that name. */
  adapter?: string;
}


export interface GenerateResult {
  text: string;
  finish_reason: 'stop' | 'length' | 'cancelled';
  usage: { prompt_tokens: number; completion_tokens: number };
  /** Milliseconds, measured by the engine from the generate() call. */
  timings: { queue_ms: number; prompt_ms: number; ttft_ms: number; total_ms: number; decode_tokens_per_s: number };
  /** Only when generate() was asked for a trace. */
  steps?: GenerationSteps;
  logprobs?: { content: TokenLogprob[] };
  /** With raw_logprobs: sums of natural-log probabilities under the model, and token counts. */
  raw_logprobs?: { prompt_sum: number; prompt_tokens: number; completion_sum: number; completion_tokens: number };
}

/** Streams text pieces as they are decoded; `result` settles once the generation has ended. */
export interface Generation extends AsyncIterableIterator<string> {
  result: Promise<GenerateResult>;
  /** With logprobs: an entry per generated token as it arrives (may run ahead of the text). */
  readonly logprobs?: readonly TokenLogprob[] | undefined;
}

export interface LocalModel {
  readonly name: string;
  /**
   * What the answer cache keys on: the model file's fingerprint (src/engine/fingerprint.ts), so a
   * different file under the same name never gets another model's answers.
   */
  readonly identity: string;
  /** Tokens one sequence may hold (prompt + completion). */
  readonly contextSize: number;
  /**
   * Its LoRA adapters by name -> what the answer cache keys on for each (the adapter file's
   * fingerprint and its scale); absent or empty for a model without adapters.
   */
  readonly adapters?: ReadonlyMap<string, string>;
  countTokens(text: string): number;
  generate(p: GenerateParams): Generation;
  /**
   * An embedding model's unit vector for one input (text, or token ids taken as they are) and the
   * tokens it read. Rejects with E_NOT_EMBEDDING_MODEL (a generative model), E_INPUT_TOO_LONG,
   * E_NO_POOLING.
   */
  embed(input: string | number[]): Promise<{ embedding: Float32Array; tokens: number }>;
  close(): Promise<void>;
}

/** Opens the model file a config names; the Service calls it once per model at start. */
export type ModelOpener = (path: string) => Promise<LocalModel>;

/** The sampling fields a request may carry, copied to the engine as they are. */
export const SAMPLING_FIELDS = ['temperature', 'top_p', 'top_k', 'min_p', 'seed', 'presence_penalty', 'frequency_penalty', 'stop', 'logprobs', 'top_logprobs'] as const;
type Sampling = Pick<GenerateParams, (typeof SAMPLING_FIELDS)[number]>;

/** What is asked: a bare prompt or chat messages (text; image and audio parts are refused here), sampling fields, and an adapter. */
export type AskedFor = Sampling & Pick<GenerateParams, 'prompt' | 'adapter'> & { messages?: readonly { role: string; content: MessageContent }[] | undefined };

/**
 * The engine's parameters for a request: max_tokens as access control or the limits settled it; when
 * it is the node's default rather than the request's, it may shrink to the room the context has left.
 */
export function generateParams(asked: AskedFor, maxTokens: number, maxIsDefault: boolean): GenerateParams {
  const p: GenerateParams = { max_tokens: maxTokens };
  if (maxIsDefault) p.max_tokens_fits_context = true;
  if (asked.prompt !== undefined) p.prompt = asked.prompt;
  if (asked.messages !== undefined) p.messages = textMessages(asked.messages);
  if (asked.adapter !== undefined) p.adapter = asked.adapter;
  for (const k of SAMPLING_FIELDS) if (asked[k] !== undefined) (p as Record<string, unknown>)[k] = asked[k];
  return p;
}

/** E_UNKNOWN_ADAPTER unless `model` has an adapter named `adapter` (undefined: none asked, fine). */
export function unknownAdapter(model: Pick<LocalModel, 'name' | 'adapters'>, adapter: string | undefined): EdgeError | undefined {
  if (adapter === undefined || model.adapters?.has(adapter)) return undefined;
  const names = [...(model.adapters?.keys() ?? [])];
  return new EdgeError(
    'E_UNKNOWN_ADAPTER',
    `the model "${model.name}" has no adapter "${adapter}"; ${names.length > 0 ? `its adapters are ${names.join(', ')}` : 'it has none (config adapters.' + model.name + ')'}, or leave adapter out for the base model`,
  );
}

/** limits.max_prompt_bytes, checked before tokenizing: a prompt too large to be worth counting. */
export function promptTooLarge(asked: Pick<AskedFor, 'prompt' | 'messages'>, maxPromptBytes: number): EdgeError | undefined {
  // Text only: image and audio parts are held to multimodal.max_part_bytes when they are decoded.
  const bytes = asked.prompt !== undefined ? Buffer.byteLength(asked.prompt) : (asked.messages ?? []).reduce((n, m) => n + Buffer.byteLength(textOf(m.content)), 0);
  if (bytes <= maxPromptBytes) return undefined;
  return new EdgeError('E_PROMPT_TOO_LONG', `the prompt is ${bytes} bytes; this node takes at most ${maxPromptBytes} (limits.max_prompt_bytes)`);
}
