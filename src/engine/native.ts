/**
 * The addon's contract, in one file: every type that crosses into or out of the C++ addon
 * (build/Release/edgellm.node, built by cmake-js at `npm install`; EDGELLM_ADDON overrides the path,
 * the offline bundle sets it), loadAddon(), and callNative(), the one way a call into it turns the
 * addon's {code, message} errors into EdgeErrors. The engine's modules import from here; nothing here
 * imports them.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EdgeError, fromNative } from '../errors.js';

// ---- GGUF files (ggufInfo)

/** Tensor element types edgellm runs (ggml's names): every weight type of llama.cpp's usual mixes. */
export type GgufTensorType =
  | 'F32' | 'F16' | 'BF16'
  | 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q8_0'
  | 'Q2_K' | 'Q3_K' | 'Q4_K' | 'Q5_K' | 'Q6_K'
  | 'IQ4_NL' | 'IQ4_XS';

/**
 * A metadata value as JS sees it. Integers are numbers, or bigints beyond 2^53 (uint64/int64).
 * Arrays of float32 / float64 are Float32Array / Float64Array; arrays of int8, uint8, int16, uint16
 * and int32 are Int32Array (so token scores and types stay compact); other arrays are plain arrays
 * (uint32, uint64, int64, bool, string, and nested arrays).
 */
export type GgufMetadataValue =
  | number
  | bigint
  | boolean
  | string
  | Float32Array
  | Float64Array
  | Int32Array
  | GgufMetadataValue[];

export interface GgufTensorInfo {
  name: string;
  type: GgufTensorType;
  /** ggml's ne: shape[0] is the contiguous (row) dimension. 1 to 4 entries. */
  shape: number[];
  /** Byte offset of the tensor's data from the start of the file. */
  offset: number;
  /** Bytes of data. */
  bytes: number;
}

export interface GgufInfo {
  /** GGUF format version: 2 or 3. */
  version: number;
  /** Data alignment in bytes (general.alignment, default 32). */
  alignment: number;
  fileSize: number;
  /** Byte offset of the tensor data section. */
  dataOffset: number;
  /** Key -> value, in file order. */
  metadata: Record<string, GgufMetadataValue>;
  /** Key -> GGUF type: "uint32", "string", "array[float32]", "array[array[int32]]"... */
  metadataTypes: Record<string, string>;
  /** In file order. */
  tensors: GgufTensorInfo[];
}

// ---- Models (loadModel)

export interface LoadModelOptions {
  /** Threads of the model's pool (default: cpuInfo().defaultThreads, see runtime/thread_pool.h). */
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
  /** An encoder (bert, nomic-bert): it makes embeddings, not text. */
  encoder: boolean;
  /** How an encoder pools its tokens into one embedding ({arch}.pooling_type). */
  pooling: 'none' | 'mean' | 'cls' | 'last' | 'rank';
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
  /**
   * An MoE larger than 3/4 of this process's memory budget (cgroup limit or MemAvailable): its routed
   * experts are read from the page cache as the router picks them, never repacked into private memory.
   */
  experts_paged: boolean;
}

export interface EvalLogitsOptions {
  /** Logits of every position (n x n_vocab) instead of the last one only (1 x n_vocab). */
  allPositions?: boolean;
  /** LoRA adapters to run with (Model.loadAdapter); absent or empty = the base model. */
  lora?: readonly LoraChoice[];
}

/**
 * A LoRA adapter loaded on a model (Model.loadAdapter): llama.cpp's GGUF adapter format, applied
 * at run time (never merged), so requests with different adapters, or none, share one base model.
 */
export interface LoraAdapter {
  /** The adapter's number on its model. */
  id: number;
  path: string;
  /** adapter.lora.alpha (0 when absent): the scale is user scale * alpha / rank, or the user scale when 0. */
  alpha: number;
  /** Base matrices it adapts. */
  pairs: number;
  max_rank: number;
  /** Bytes of its tensors (memory-mapped). */
  bytes: number;
}

/** An adapter a request runs with, and its user scale (default 1; 0 = off). */
export interface LoraChoice {
  adapter: LoraAdapter;
  scale?: number;
}

/** @internal the addon's form of a LoraChoice */
export interface NativeLoraChoice {
  adapter: number;
  scale: number;
}

/** What Model.trace keeps (native/src/runtime/trace.h). */
export interface TraceOptions {
  /** Layers whose attention and output to keep: 0-based, distinct, < n_layer. */
  layers: number[];
  /** Query heads whose attention to keep: distinct, < n_head. */
  heads: number[];
  /** Greedy tokens to generate after the prompt; they are fed through and traced too (default 0). */
  generate?: number;
}

/** One kept layer of a trace; T = tokens.length. */
export interface LayerTrace {
  layer: number;
  /**
   * [heads][T][T] (row = query position, column = key position): each row is the softmax over the
   * keys that query sees and sums to 1; 0 for keys it does not see (later, or outside a window).
   */
  attention: Float32Array;
  /** [T][n_embd] the residual stream after the layer. */
  hidden: Float32Array;
}

/** The result of Model.trace. */
export interface ModelTrace {
  /** The prompt, then the generated tokens. */
  tokens: Int32Array;
  promptTokens: number;
  /** Largest |sum p * V - the attention kernel's output| over every kept (query, head): the self-check. */
  attentionError: number;
  /** [T][n_embd] the output norm's result: the classifier's input. */
  finalNorm: Float32Array;
  /** [T][n_vocab] the pass's logits at every position. */
  logits: Float32Array;
  layers: LayerTrace[];
}

/** @internal the addon's object */
export interface NativeModel extends NativeDecoder {
  info(): ModelInfo;
  evalLogits(tokens: Int32Array, opts?: { allPositions?: boolean; lora?: NativeLoraChoice[] }): Promise<Float32Array>;
  evalSequences(seqs: Array<{ tokens: Int32Array; prefill: number; lora?: NativeLoraChoice[] }>): Promise<Float32Array[]>;
  loadAdapter(path: string): Promise<LoraAdapter>;
  trace(tokens: Int32Array, opts: TraceOptions): Promise<ModelTrace>;
  /** An encoder's pooled, L2-normalized embedding of one input (n_embd floats). */
  embed(tokens: Int32Array): Promise<Float32Array>;
  close(): void;
}

/** @internal */
export type NativeLoadOptions = LoadModelOptions;

// ---- The decode loop (a model's generate/cancel/decodeState)

/** The sampling parameters of a generation; every result carries them with the defaults filled in. */
export interface SamplingSettings {
  /** >= 0; 0 = greedy (argmax). */
  temperature: number;
  /** Keep the k most likely tokens; 0 = the whole vocabulary. */
  top_k: number;
  /** Nucleus sampling: keep the smallest set of tokens whose probability sums to top_p; 1 = off. */
  top_p: number;
  /** Drop tokens less likely than min_p x the most likely one; 0 = off. */
  min_p: number;
  /** Divides positive / multiplies negative logits of recent tokens (> 0); 1 = off. */
  repeat_penalty: number;
  /** Subtracted once from the logit of every recent token, in [-2, 2]; 0 = off. */
  presence_penalty: number;
  /** Subtracted per occurrence of a recent token, in [-2, 2]; 0 = off. */
  frequency_penalty: number;
  /** How many recent tokens (prompt included) the penalties look at; 0 = no penalties. */
  penalty_last_n: number;
  /** The random generator's seed; the same seed and request give the same text. */
  seed: number;
}

/** What the addon's decode channel reports when a sequence ends (decode_channel.h). */
export interface NativeFinish {
  reason: 'stop' | 'length' | 'cancelled' | 'error';
  code?: string;
  message?: string;
  stop_token: number;
  prompt_tokens: number;
  completion_tokens: number;
  queue_ms: number;
  prompt_ms: number;
  ttft_ms: number;
  total_ms: number;
  decode_ms: number;
  /** With rawLogprobs: sums of the model's natural-log probabilities (no penalties, no temperature). */
  prompt_logprob_sum?: number;
  /** Prompt tokens after the first, each scored given its prefix. */
  prompt_logprob_tokens?: number;
  completion_logprob_sum?: number;
  completion_logprob_tokens?: number;
}

/**
 * With topLogprobs: per delivered token its log-probability and `top` alternatives each (row-major;
 * id -1 past a token's own count, when the sampler's filters kept fewer candidates).
 */
export interface NativeLogprobs {
  logprob: Float32Array;
  top: number;
  top_ids: Int32Array;
  top_logprobs: Float32Array;
}

/** @internal the decode half of the addon's Model; a `trace` request's callback also gets (at_ms, batch) pairs per token (steps.ts) */
export interface NativeDecoder {
  generate(
    request: {
      tokens: Int32Array;
      stopTokens: Int32Array;
      maxTokens: number;
      /** Deliver each token's (at_ms, step sequences) to the callback (a request's trace). */
      trace?: boolean;
      /** 0..20 alternatives per token; absent = no log-probabilities computed. */
      topLogprobs?: number;
      /** Sum the model's log-probabilities of prompt and generated tokens (the drift signal). */
      rawLogprobs?: boolean;
      /** LoRA adapters by id, with their scales. */
      lora?: NativeLoraChoice[];
    } & SamplingSettings,
    callback: (tokens: Int32Array, finish?: NativeFinish, steps?: Float64Array, logprobs?: NativeLogprobs) => void,
  ): number;
  cancel(id: number): void;
  decodeState(): DecodeState;
}

/** The native decode loop's load. */
export interface DecodeState {
  /** Sequences holding a KV cache (being prefilled or decoded). */
  active: number;
  /** Sequences waiting for a slot. */
  queued: number;
  /** Most sequences decoded together (LoadModelOptions.maxSequences). */
  max_sequences: number;
}

// ---- Requirements from metadata alone (modelConfig)

export interface ModelRequirementsOptions {
  /** Positions per sequence (default: the model's context, at most 4096, as loadModel does). */
  contextSize?: number;
  /** Prefill chunk (default 64, as loadModel). */
  batchSize?: number;
  /** StreamingLLM sinks, as loadModel. */
  sinks?: number;
}

/** What the addon reads from a model's header (requirements.ts adds the tokenizer's status). */
export interface ModelRequirements extends ModelArchitecture {
  /** general.name ('' when absent). */
  name: string;
  /** Layers attending to the last sliding_window positions only (their KV is a ring). */
  swa_layers: number;
  /** Elements of all tensors. */
  n_params: number;
  /** Bytes of tensor data (memory-mapped when loaded). */
  weight_bytes: number;
  /** Of those, the routed experts' (blk.N.ffn_{gate,up,down}_exps): n_expert_used / n_expert of them read per token. */
  expert_bytes: number;
  file_size: number;
  /** Tensor type (ggml's name, also of types edgellm does not run) -> number of tensors and their bytes. */
  tensor_types: Record<string, { count: number; bytes: number }>;
  /** Tensors of types edgellm does not run, in file order: they block loading. `advice` says what to do. */
  unsupported_tensors: Array<{ name: string; type: string; advice: string }>;
  tied_output: boolean;
  context_size: number;
  batch_size: number;
  /** KV cache one sequence allocates at context_size (f16 K and V; ring layers hold W + batch - 1). */
  kv_bytes_per_sequence: number;
  /** What each position adds to it on the full layers (deepseek2: the compressed latent and rope key). */
  kv_bytes_per_token: number;
  /** The forward pass's activations for batch_size tokens. */
  scratch_bytes: number;
  unbounded: boolean;
}

// ---- Model benchmarks (benchModel)

export interface ModelBenchOptions {
  /** Threads of the pool (default: cpuInfo().defaultThreads). */
  threads?: number;
  /** Prompt tokens for pp (default 512; 0 skips it). */
  promptTokens?: number;
  /** Decoded tokens for tg (default 128; 0 skips it). */
  genTokens?: number;
  /** Prefill chunk (default 64). */
  batchSize?: number;
}

export interface ModelBenchResult {
  arch: string;
  kernels: string;
  threads: number;
  n_prompt: number;
  n_gen: number;
  batch_size: number;
  load_seconds: number;
  pp_seconds: number;
  tg_seconds: number;
  /** Prompt tokens per second. */
  pp_tps: number;
  /** Decoded tokens per second. */
  tg_tps: number;
  /** Bytes of all tensor data in the file. */
  weight_bytes: number;
  /** Bytes of weights one decoded token reads (MoE: the router and n_expert_used experts per layer). */
  weight_bytes_per_token: number;
  /** weight_bytes_per_token x tg_tps, in GB/s (1e9 bytes). */
  effective_gbps: number;
  /** One sequence's KV cache, bytes. */
  kv_bytes: number;
}

// ---- The machine (cpuInfo, benchKernels)

export interface CpuInfo {
  arch: string;
  model: string;
  logicalCores: number;
  physicalCores: number;
  /** CPUs this process may use: the affinity mask and the cgroup CPU quota (whole CPUs). */
  usableCpus: number;
  /** Threads a model uses unless told otherwise (runtime/thread_pool.h default_threads_for). */
  defaultThreads: number;
  /** Why defaultThreads, in one line ("3 of 4 usable CPUs: one left to the event loop ..."). */
  defaultThreadsReason: string;
  /** avx512vnni: AVX512F/BW/VL/VNNI present and zmm state saved by the OS (the avx512 table). */
  features: { avx2: boolean; fma: boolean; f16c: boolean; avx512vnni: boolean; neon: boolean; dotprod: boolean };
  /** The kernel table in use: reference, avx2, avx512, neon or neon-dotprod. */
  kernels: string;
  runnableKernels: string[];
}

/** One line of `edgellm bench kernels`. */
export interface KernelBenchRow {
  /** "read_bandwidth" or "gemv_q4_0". */
  name: string;
  isa: string;
  rows: number;
  cols: number;
  threads: number;
  /** GB/s of bytes streamed (weights for a GEMV, the buffer for read_bandwidth). */
  gbps: number;
  /** Read bandwidth measured in the same run with the same thread count. */
  peak_gbps: number;
  /** gbps / peak_gbps. */
  ratio: number;
  seconds: number;
}

export interface KernelBenchOptions {
  threads?: number[];
  /** [rows, cols] pairs. */
  shapes?: Array<[number, number]>;
  /** Quantized weight types whose GEMV to measure, by name (Q4_0, Q4_K, Q6_K, IQ4_XS, ...); default Q4_0. */
  types?: string[];
  minSeconds?: number;
  workingSetBytes?: number;
}

export interface NativeAddon {
  cpuInfo(): CpuInfo;
  benchKernels(opts?: KernelBenchOptions): Promise<KernelBenchRow[]>;
  ggufInfo(path: string): GgufInfo;
  loadModel(path: string, opts?: NativeLoadOptions): Promise<NativeModel>;
  modelConfig(path: string, opts?: ModelRequirementsOptions): ModelRequirements;
  /** The general.architecture names the engine loads (llama, qwen2, ...). */
  supportedArchitectures(): string[];
  /** Whole rows of `rowLength` elements from one tensor type to another, off the event loop. */
  convertRows(src: Uint8Array, srcType: string, dstType: string, rowLength: number): Promise<Uint8Array>;
  /** Sends a datagram to $NOTIFY_SOCKET: true when sent, false when the variable is unset. */
  sdNotify(state: string): boolean;
  benchModel(path: string, opts?: ModelBenchOptions): Promise<ModelBenchResult>;
}

const here = dirname(fileURLToPath(import.meta.url));
/** The package root: dist/engine/ -> ../.. */
export const packageRoot = resolve(here, '..', '..');

let cached: NativeAddon | undefined;

export function addonPath(): string {
  return process.env.EDGELLM_ADDON ?? resolve(packageRoot, 'build', 'Release', 'edgellm.node');
}

export function loadAddon(): NativeAddon {
  if (cached) return cached;
  const path = addonPath();
  if (!existsSync(path)) {
    throw new EdgeError(
      'E_ADDON_MISSING',
      `the native engine is not built (${path} is missing): run \`npm run build:native\` ` +
        '(needs cmake and a C++17 compiler), or reinstall edgellm',
    );
  }
  const require = createRequire(import.meta.url);
  try {
    cached = require(path) as NativeAddon;
  } catch (err) {
    throw new EdgeError(
      'E_ADDON_MISSING',
      `the native engine at ${path} could not be loaded (${(err as Error).message}); ` +
        'rebuild it for this machine with `npm run build:native`',
      { cause: err },
    );
  }
  return cached;
}

/**
 * Runs one call into the addon (or into an object it returned) and gives its failures the engine's
 * shape: a throw or a rejected promise becomes an EdgeError with the addon's E_ code (E_ENGINE when it
 * had none); an EdgeError (E_ADDON_MISSING from loadAddon) passes through as it is.
 */
export function callNative<T>(call: () => T): T {
  let out: T;
  try {
    out = call();
  } catch (err) {
    throw fromNative(err);
  }
  if (out instanceof Promise) {
    return out.catch((err: unknown) => {
      throw fromNative(err);
    }) as T;
  }
  return out;
}

/** callNative on the addon itself: `callAddon((a) => a.ggufInfo(path))`. */
export function callAddon<T>(call: (addon: NativeAddon) => T): T {
  return callNative(() => call(loadAddon()));
}
