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
import { callNative, loadAddon } from './native.js';
import { Tokenizer } from './tokenizer/index.js';
import type { LoadModelOptions, ModelInfo, EvalLogitsOptions, NativeModel, ModelTrace, TraceOptions, LoraAdapter, LoraChoice, NativeLoraChoice } from './native.js';
export type { LoadModelOptions, ModelArchitecture, ModelInfo, EvalLogitsOptions, NativeModel, NativeLoadOptions } from './native.js';
export type { LoraAdapter, LoraChoice } from './native.js';
export type { LayerTrace, ModelTrace, TraceOptions } from './native.js';






export class Model {
  private native: NativeModel | undefined;
  private readonly tokenizerBuilt: Tokenizer | undefined;
  private readonly adapters = new Set<LoraAdapter>();
  readonly path: string;

  /** @internal use loadModel() */
  constructor(native: NativeModel, path: string, tokenizer: Tokenizer | undefined) {
    this.native = native;
    this.path = path;
    this.tokenizerBuilt = tokenizer;
  }

  info(): ModelInfo {
    return callNative(() => this.live().info());
  }

  /**
   * Evaluates `tokens` as a fresh sequence from position 0 and returns raw logits:
   * n_vocab floats for the last position, or n x n_vocab (row i = the distribution after token i)
   * with allPositions. Runs on a worker thread. Rejects with E_BAD_ARGUMENT for a token outside
   * the vocabulary and E_CONTEXT_FULL when the tokens do not fit the context.
   */
  async evalLogits(tokens: Int32Array | readonly number[], opts: EvalLogitsOptions = {}): Promise<Float32Array> {
    const ids = tokens instanceof Int32Array ? tokens : Int32Array.from(tokens);
    const lora = this.nativeLora(opts.lora);
    return await callNative(() => this.live().evalLogits(ids, { ...(opts.allPositions !== undefined ? { allPositions: opts.allPositions } : {}), ...(lora ? { lora } : {}) }));
  }

  /**
   * Loads a LoRA adapter (llama.cpp's GGUF adapter format) for this model, off the event loop. It is
   * applied at run time, per request (evalLogits/evalSequences/generate `lora`), never merged, so
   * the base model serves requests with different adapters, or none, in the same batch. Rejects
   * with E_MODEL_NOT_FOUND, E_MODEL_CORRUPT, or E_MODEL_UNSUPPORTED naming the tensor (an adapter
   * for another architecture or base model, a shape that does not fit, a tensor edgellm does not adapt).
   */
  async loadAdapter(path: string): Promise<LoraAdapter> {
    const adapter = await callNative(() => this.live().loadAdapter(path));
    this.adapters.add(adapter);
    return adapter;
  }

  /** The adapters loaded on this model, in load order. */
  loraAdapters(): LoraAdapter[] {
    return [...this.adapters];
  }

  /**
   * Evaluates several fresh sequences together, as the decode loop does: each sequence's first
   * `prefill` tokens are evaluated on their own (in chunks of batchSize), then the remaining
   * tokens of all sequences advance one per step in shared batches, each sequence at its own
   * position. Returns every position's logits (tokens.length x n_vocab) per sequence.
   */
  async evalSequences(seqs: Array<{ tokens: Int32Array | readonly number[]; prefill?: number; lora?: readonly LoraChoice[] }>): Promise<Float32Array[]> {
    const native = seqs.map((s) => {
      const lora = this.nativeLora(s.lora);
      return {
        tokens: s.tokens instanceof Int32Array ? s.tokens : Int32Array.from(s.tokens),
        prefill: s.prefill ?? 0,
        ...(lora ? { lora } : {}),
      };
    });
    return await callNative(() => this.live().evalSequences(native));
  }

  /**
   * Evaluates `tokens` as a fresh sequence (then `generate` greedy tokens, fed back one by one)
   * and keeps what the forward pass computed inside: the attention probabilities of the chosen
   * heads and the residual stream after the chosen layers, and the final norm's output. A slow
   * debugging path (`edgellm trace`). Rejects with E_BAD_ARGUMENT for an empty prompt or a layer
   * or head out of range, E_MODEL_UNSUPPORTED for deepseek2, E_CONTEXT_FULL when prompt +
   * generate do not fit the context.
   */
  async trace(tokens: Int32Array | readonly number[], opts: TraceOptions): Promise<ModelTrace> {
    const ids = tokens instanceof Int32Array ? tokens : Int32Array.from(tokens);
    return await callNative(() => this.live().trace(ids, opts));
  }

  /**
   * An encoder's embedding of one input: n_embd floats, pooled as the file's pooling_type says
   * (mean, cls or last) and L2-normalized. Text is tokenized with the model's tokenizer, which adds
   * its own markers ([CLS] ... [SEP] for a WordPiece vocabulary); token ids are taken as they are.
   * Runs on a worker thread. Rejects with E_EMPTY_INPUT (no text), E_INPUT_TOO_LONG (more tokens
   * than the model's context_length), E_NO_POOLING (pooling_type none), E_NOT_EMBEDDING_MODEL (a
   * generative model: edgellm does not pool decoders' hidden states).
   */
  async embed(input: string | Int32Array | readonly number[]): Promise<Float32Array> {
    if (input.length === 0) throw new EdgeError('E_EMPTY_INPUT', 'the input is empty: give at least one character of text to embed');
    const ids = typeof input === 'string' ? Int32Array.from(this.tokenizer.encode(input)) : input instanceof Int32Array ? input : Int32Array.from(input);
    return await callNative(() => this.live().embed(ids));
  }

  /**
   * The model's tokenizer, built by loadModel. Throws E_MODEL_CORRUPT for a file without one
   * (random test models: they can be evaluated, not prompted).
   */
  get tokenizer(): Tokenizer {
    if (!this.tokenizerBuilt) {
      throw new EdgeError('E_MODEL_CORRUPT', `${this.path}: tokenizer.ggml.model is missing: the file has no tokenizer, so it cannot take text`);
    }
    return this.tokenizerBuilt;
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
    if (info.encoder) {
      throw new EdgeError('E_NOT_GENERATIVE', `${this.path} is an embedding model (${info.arch}): it does not generate text; ask it for embeddings (edgellm embed, POST /v1/embeddings)`);
    }
    return callNative(() => startGeneration(
        { native, tokenizer: this.tokenizer, contextSize: info.context_size, unbounded: info.unbounded, lora: (l) => this.nativeLora(l, 'E_BAD_REQUEST') },
        request,
      ));
  }

  /** How many generations the native loop is decoding and how many wait. */
  decodeState(): DecodeState {
    return callNative(() => this.live().decodeState());
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

  /**
   * A request's lora list in the addon's form, or undefined for none. Throws EdgeError
   * E_UNKNOWN_ADAPTER for an adapter not loaded on this model, `badCode` for a malformed list.
   */
  private nativeLora(choices: unknown, badCode: 'E_BAD_ARGUMENT' | 'E_BAD_REQUEST' = 'E_BAD_ARGUMENT'): NativeLoraChoice[] | undefined {
    if (choices === undefined) return undefined;
    if (!Array.isArray(choices)) throw new EdgeError(badCode, 'lora must be an array of {adapter, scale} with adapters from model.loadAdapter()');
    const out: NativeLoraChoice[] = [];
    for (const c of choices as unknown[]) {
      const adapter = (c as { adapter?: unknown } | null)?.adapter;
      const scale = (c as { scale?: unknown }).scale ?? 1;
      if (typeof adapter !== 'object' || adapter === null) throw new EdgeError(badCode, 'each lora entry needs an adapter returned by model.loadAdapter()');
      if (!this.adapters.has(adapter as LoraAdapter)) {
        throw new EdgeError('E_UNKNOWN_ADAPTER', `the adapter ${(adapter as { path?: unknown }).path ?? ''} is not loaded on ${this.path}; load it with this model's loadAdapter(path)`);
      }
      if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new EdgeError(badCode, `a lora scale must be a finite number, got ${String(scale)}`);
      out.push({ adapter: (adapter as LoraAdapter).id, scale });
    }
    return out.length > 0 ? out : undefined;
  }

  private live(): NativeModel {
    if (!this.native) throw new EdgeError('E_MODEL_CLOSED', `the model ${this.path} was closed; load it again`);
    return this.native;
  }
}

/**
 * Loads a GGUF model (llama incl. Mistral/Mixtral, qwen2, qwen3, qwen3moe, gemma3, phi3, gemma2,
 * olmoe, smollm3, deepseek2; the encoders bert and nomic-bert for embeddings) off the event loop, and builds its tokenizer. Rejects with E_MODEL_NOT_FOUND, E_MODEL_CORRUPT (naming the
 * tensor or key) or E_MODEL_UNSUPPORTED (naming the architecture, type, or the tokenizer key and
 * value), so a model that loads can also take text.
 */
export async function loadModel(path: string, opts: LoadModelOptions = {}): Promise<Model> {
  let native: NativeModel;
  try {
    native = await loadAddon().loadModel(path, opts);
  } catch (err) {
    throw fromNative(err);
  }
  try {
    return new Model(native, path, modelTokenizer(path));
  } catch (err) {
    native.close();
    throw err;
  }
}

/**
 * The tokenizer a GGUF file describes, or undefined when it has none (no tokenizer.ggml.model: test
 * models, which can be evaluated but not prompted). A tokenizer that cannot be built is an error of
 * the file: EdgeError E_MODEL_UNSUPPORTED / E_MODEL_CORRUPT naming the file and the key.
 */
export function modelTokenizer(path: string): Tokenizer | undefined {
  const metadata = readGgufInfo(path).metadata;
  if (metadata['tokenizer.ggml.model'] === undefined) return undefined;
  try {
    return Tokenizer.fromMetadata(metadata);
  } catch (err) {
    if (err instanceof EdgeError) throw new EdgeError(err.code, `${path}: ${err.message}`, { cause: err });
    throw err;
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
