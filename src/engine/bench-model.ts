/**
 * Prompt-processing and decode speed of the native forward pass on a model file, like llama-bench:
 * pp = one fresh sequence prefilled with `promptTokens` tokens (the GEMM path), tg = a fresh
 * sequence decoding `genTokens` tokens one step at a time. Timed in C++ on a worker thread.
 */
import { callAddon } from './native.js';
import type { ModelBenchOptions, ModelBenchResult } from './native.js';
export type { ModelBenchOptions, ModelBenchResult } from './native.js';



export async function benchModel(path: string, opts: ModelBenchOptions = {}): Promise<ModelBenchResult> {
  return await callAddon((addon) => addon.benchModel(path, opts));
}
