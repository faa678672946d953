/**
 * What a model file needs to run, read from its metadata and tensor table only (no weights are
 * read): the engine's own hyperparameters (native read_model_config), the KV cache a sequence
 * allocates and the forward pass's scratch, and whether that fits this device's memory.
 *
 *   const req = modelRequirements('stories260K.gguf', { contextSize: 512 });
 *   const fit = memoryFit(req, deviceMemory());  // fit.verdict: 'fits' | 'tight' | 'too-big'
 */
import { readFileSync } from 'node:fs';
import { freemem, totalmem } from 'node:os';
import { fromNative } from '../errors.js';
import type { ModelArchitecture } from './model.js';
import { loadAddon } from './native.js';

export interface ModelRequirementsOptions {
  /** Positions per sequence (default: the model's context, at most 4096, as loadModel does). */
  contextSize?: number;
  /** Prefill chunk (default 64, as loadModel). */
  batchSize?: number;
  /** StreamingLLM sinks, as loadModel. */
  sinks?: number;
}

export interface ModelRequirements extends ModelArchitecture {
  /** general.name ('' when absent). */
  name: string;
  /** Layers attending to the last sliding_window positions only (their KV is a ring). */
  swa_layers: number;
  /** Elements of all tensors. */
  n_params: number;
  /** Bytes of tensor data (memory-mapped when loaded). */
  weight_bytes: number;
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

/** Reads the requirements; throws EdgeError E_MODEL_* (naming the file) or E_BAD_ARGUMENT. */
export function modelRequirements(path: string, opts: ModelRequirementsOptions = {}): ModelRequirements {
  try {
    return loadAddon().modelConfig(path, opts);
  } catch (err) {
    throw fromNative(err);
  }
}

export interface DeviceMemory {
  totalBytes: number;
  /** What the kernel says can be had without swapping (MemAvailable), or os.freemem() without /proc. */
  availableBytes: number;
  source: '/proc/meminfo' | 'os';
}

export function deviceMemory(meminfo = '/proc/meminfo'): DeviceMemory {
  try {
    const text = readFileSync(meminfo, 'utf8');
    const kb = (key: string) => {
      const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
      return m ? Number(m[1]) * 1024 : undefined;
    };
    const total = kb('MemTotal');
    const available = kb('MemAvailable');
    if (total !== undefined && available !== undefined) {
      return { totalBytes: total, availableBytes: available, source: '/proc/meminfo' };
    }
  } catch {
    // not Linux, or /proc is not mounted: fall back to what Node knows
  }
  return { totalBytes: totalmem(), availableBytes: freemem(), source: 'os' };
}

export interface MemoryFit {
  /** Weights + one sequence's KV cache + scratch + one row of logits. */
  neededBytes: number;
  /**
   * fits: needed <= available. tight: more than is available now but less than the total
   * (close other programs, or the page cache must give way). too-big: more than the device has.
   */
  verdict: 'fits' | 'tight' | 'too-big';
}

export function memoryFit(req: ModelRequirements, mem: DeviceMemory): MemoryFit {
  const neededBytes = req.weight_bytes + req.kv_bytes_per_sequence + req.scratch_bytes + req.n_vocab * 4;
  const verdict = neededBytes <= mem.availableBytes ? 'fits' : neededBytes <= mem.totalBytes ? 'tight' : 'too-big';
  return { neededBytes, verdict };
}
