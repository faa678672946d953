/**
 * A model loaded into the native engine: the GGUF file memory-mapped, weights bound and checked,
 * one thread pool, and a forward pass whose work runs off the event loop.
 *
 *   const model = await loadModel('stories260K.gguf', { threads: 2 });
 *   const logits = await model.evalLogits(Int32Array.of(1, 403, 407));  // the last position's
 *   model.close();
 */
import { EdgeError, fromNative } from '../errors.js';
import { startGeneration, type DecodeState, type GenerateRequest, type Generation, type NativeDecoder } from './generate.js';
import { readGgufInfo } from './gguf.js';
import { loadAddon } from './native.js';
import { Tokenizer } from './tokenizer/index.js';

export interface LoadModelOptions {
  /** Threads of the model's pool (default: physical cores, at most 4). */
  threads?: number;
  /** Positions per sequence for full-attention layers (default: the model's context, at most 4096). */
  contextSize?: number;
  /**
   * StreamingLLM: keep the first `sinks` positions plus the most recent ones, so sequences never
   * hit E_CONTEXT_FULL and their KV memory stays fixed. Off by default.
   */
  sinks?: number;
  /** Most tokens evaluated in one step: the prefill chunk (default 64). */
  batchSize?: number;
  /**
   * Most generations decoded together, one token each per step (default 4, at most batchSize);
   * more wait in a queue. Each active one holds a KV cache of kv_bytes_per_sequence.
   */
  maxSequences?: number;
}

/** The hyperparameters the engine reads from a file (Model.info() and modelRequirements()). */
export interface ModelArchitecture {
  arch: string;
  n_vocab: number;
  n_embd: number;
  n_layer: number;
  n_head: number;
  n_head_kv: number;
  head_dim: number;
  /** FFN width (of one expert for MoE models). */
  n_ff: number;
  n_expert: number;
  n_expert_used: number;
  /** The context the model was trained with. */
  context_length: number;
  /** 0 when no layer uses sliding-window attention. */
  sliding_window: number;
  /**
   * Multi-head latent attention (deepseek2): the latent each position caches (with the rope dims)
   * instead of per-head K and V; 0 for every other architecture.
   */
  kv_lora_rank: number;
}

/** What the file holds and how it was loaded. */
export interface ModelInfo extends ModelArchitecture {
  /** Elements of all tensors in the file. */
  n_params: number;
  /** Tensor type name -> number of tensors. */
  tensor_types: Record<string, number>;
  /** Bytes of tensor data. */
  weight_bytes: number;
  file_size: number;
  /** The output classifier is the token embedding matrix. */
  tied_output: boolean;
  /** Positions a sequence may hold (the contextSize in use). */
  context_size: number;
  batch_size: number;
  threads: number;
  /** KV cache bytes each sequence allocates. */
  kv_bytes_per_sequence: number;
  /** Most generations decoded together. */
  max_sequences: number;
  /** Every layer keeps bounded KV (sliding window or sinks): no E_CONTEXT_FULL. */
  unbounded: boolean;
}

export interface EvalLogitsOptions {
  /** Logits of every position (n x n_vocab) instead of the last one only (1 x n_vocab). */
  allPositions?: boolean;
}

/** @internal the addon's object */
export interface NativeModel extends NativeDecoder {
  info(): ModelInfo;
  evalLogits(tokens: Int32Array, opts?: EvalLogitsOptions): Promise<Float32Array>;
  evalSequences(seqs: Array<{ tokens: Int32Array; prefill: number }>): Promise<Float32Array[]>;
  close(): void;
}
/** @internal */
export type NativeLoadOptions = LoadModelOptions;

export class Model {
  private native: NativeModel | undefined;
  private tokenizerCache: Tokenizer | undefined;
  readonly path: string;

  /** @internal use loadModel() */
  constructor(native: NativeModel, path: string) {
    this.native = native;
    this.path = path;
  }

  info(): ModelInfo {
    try {
      return this.live().info();
    } catch (err) {
      throw fromNative(err);
    }
  }

  /**
   * Evaluates `tokens` as a fresh sequence from position 0 and returns raw logits:
   * n_vocab floats for the last position, or n x n_vocab (row i = the distribution after token i)
   * with allPositions. Runs on a worker thread. Rejects with E_BAD_ARGUMENT for a token outside
   * the vocabulary and E_CONTEXT_FULL when the tokens do not fit the context.
   */
  async evalLogits(tokens: Int32Array | readonly number[], opts: EvalLogitsOptions = {}): Promise<Float32Array> {
    const ids = tokens instanceof Int32Array ? tokens : Int32Array.from(tokens);
    try {
      return await this.live().evalLogits(ids, opts);
    } catch (err) {
      throw fromNative(err);
    }
  }

  /**
   * Evaluates several fresh sequences together, as the decode loop does: each sequence's first
   * `prefill` tokens are evaluated on their own (in chunks of batchSize), then the remaining
   * tokens of all sequences advance one per step in shared batches, each sequence at its own
   * position. Returns every position's logits (tokens.length x n_vocab) per sequence.
   */
  async evalSequences(seqs: Array<{ tokens: Int32Array | readonly number[]; prefill?: number }>): Promise<Float32Array[]> {
    const native = seqs.map((s) => ({
      tokens: s.tokens instanceof Int32Array ? s.tokens : Int32Array.from(s.tokens),
      prefill: s.prefill ?? 0,
    }));
    try {
      return await this.live().evalSequences(native);
    } catch (err) {
      throw fromNative(err);
    }
  }

  /** The model's tokenizer, built from its GGUF metadata on first use. */
  get tokenizer(): Tokenizer {
    if (!this.tokenizerCache) this.tokenizerCache = Tokenizer.fromMetadata(readGgufInfo(this.path).metadata);
    return this.tokenizerCache;
  }

  /**
   * Starts generating text for a prompt or a chat and returns at once; see Generation. Several
   * generations run together (batched by the native decode loop, up to maxSequences at a time).
   * Throws EdgeError E_BAD_REQUEST naming a bad field, E_PROMPT_TOO_LONG when prompt + max_tokens
   * do not fit the context, E_MODEL_CLOSED after close().
   */
  generate(request: GenerateRequest): Generation {
    const native = this.live();
    const info = this.info();
    try {
      return startGeneration(
        { native, tokenizer: this.tokenizer, contextSize: info.context_size, unbounded: info.unbounded },
        request,
      );
    } catch (err) {
      throw fromNative(err);
    }
  }

  /** How many generations the native loop is decoding and how many wait. */
  decodeState(): DecodeState {
    try {
      return this.live().decodeState();
    } catch (err) {
      throw fromNative(err);
    }
  }

  /**
   * Releases the model. Running generations end with finish_reason 'cancelled' (their KV caches
   * freed, the decode thread joined) before this returns; evaluations in flight keep the weights
   * until they finish. Later calls fail with E_MODEL_CLOSED.
   */
  close(): void {
    this.native?.close();
    this.native = undefined;
  }

  private live(): NativeModel {
    if (!this.native) throw new EdgeError('E_MODEL_CLOSED', `the model ${this.path} was closed; load it again`);
    return this.native;
  }
}

/**
 * Loads a GGUF model (llama incl. Mistral/Mixtral, qwen2, qwen3, qwen3moe, gemma3) off the event
 * loop. Rejects with E_MODEL_NOT_FOUND, E_MODEL_CORRUPT (naming the tensor or key) or
 * E_MODEL_UNSUPPORTED (naming the architecture or type).
 */
export async function loadModel(path: string, opts: LoadModelOptions = {}): Promise<Model> {
  try {
    const native = await loadAddon().loadModel(path, opts);
    const model = new Model(native, path);
    // Build the tokenizer now, so the first generate() does not pay for it on the event loop.
    // Files without tokenizer metadata (test models) load anyway; generate() then reports why.
    try {
      void model.tokenizer;
    } catch {
      /* reported by generate() */
    }
    return model;
  } catch (err) {
    throw fromNative(err);
  }
}

/** log-softmax of one row of logits, computed in double precision. */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i]! - lse;
  return out;
}
