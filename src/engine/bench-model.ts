/**
 * Prompt-processing and decode speed of the native forward pass on a model file, like llama-bench:
 * pp = one fresh sequence prefilled with `promptTokens` tokens (the GEMM path), tg = a fresh
 * sequence decoding `genTokens` tokens one step at a time. Timed in C++ on a worker thread.
 */
import { fromNative } from '../errors.js';
import { loadAddon } from './native.js';

export interface ModelBenchOptions {
  /** Threads of the pool (default: physical cores, at most 4). */
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

export async function benchModel(path: string, opts: ModelBenchOptions = {}): Promise<ModelBenchResult> {
  try {
    return await loadAddon().benchModel(path, opts);
  } catch (err) {
    throw fromNative(err);
  }
}
