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
import { EdgeError } from '../errors.js';
import { modelTokenizer } from './model.js';
import { callAddon } from './native.js';
import type { ModelRequirementsOptions, ModelRequirements as NativeModelRequirements } from './native.js';
export type { ModelRequirementsOptions } from './native.js';


/** What the addon reads from the file, plus whether loadModel can build its tokenizer. */
export interface ModelRequirements extends NativeModelRequirements {
  /** Whether loadModel can build the file's tokenizer (a tokenizer it cannot build blocks loading). */
  tokenizer: TokenizerStatus;
}

export type TokenizerStatus =
  | { status: 'ok'; model: 'spm' | 'bpe'; pre: string; n_tokens: number }
  /** No tokenizer.ggml.model: the model loads and evaluates token ids, but cannot take text. */
  | { status: 'none' }
  | { status: 'blocked'; code: string; message: string }
  /** Not read: tensors of types edgellm does not run block loading first. */
  | { status: 'unchecked' };

/** The architectures (GGUF general.architecture) the engine loads, from the engine itself. */
export function supportedArchitectures(): string[] {
  return callAddon((addon) => addon.supportedArchitectures());
}

/** Reads the requirements; throws EdgeError E_MODEL_* (naming the file) or E_BAD_ARGUMENT. */
export function modelRequirements(path: string, opts: ModelRequirementsOptions = {}): ModelRequirements {
  const req = callAddon((addon) => addon.modelConfig(path, opts));
  // The metadata reader refuses tensor types edgellm does not run: those block loading first.
  return { ...req, tokenizer: req.unsupported_tensors.length > 0 ? { status: 'unchecked' } : tokenizerStatus(path) };
}

function tokenizerStatus(path: string): TokenizerStatus {
  try {
    const tk = modelTokenizer(path);
    if (!tk) return { status: 'none' };
    return { status: 'ok', model: tk.vocab.model, pre: tk.vocab.pre?.name ?? 'spm', n_tokens: tk.size };
  } catch (err) {
    if (err instanceof EdgeError) return { status: 'blocked', code: err.code, message: err.message };
    throw err;
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
