/**
 * What a model file needs to run, read from its metadata and tensor table only (no weights are
 * read): the engine's own hyperparameters (native read_model_config), the KV cache a sequence
 * allocates and the forward pass's scratch, and whether that fits this device's memory.
 *
 *   const req = modelRequirements('stories260K.gguf', { contextSize: 512 });
 *   const fit = memoryFit(req, deviceMemory());  // fit.verdict: 'fits' | 'tight' | 'too-big', fit.neededBytes
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
  | { status: 'ok'; model: 'spm' | 'bpe' | 'wpm'; pre: string; n_tokens: number }
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
    return { status: 'ok', model: tk.vocab.model, pre: tk.vocab.pre?.name ?? tk.vocab.model, n_tokens: tk.size };
  } catch (err) {
    if (err instanceof EdgeError) return { status: 'blocked', code: err.code, message: err.message };
    throw err;
  }
}

export interface DeviceMemory {
  totalBytes: number;
  /** What the kernel says can be had without swapping (MemAvailable), or os.freemem() without /proc. */
  availableBytes: number;
  /** 'given': a device described by its RAM size (deviceOfSize), not this machine. */
  source: '/proc/meminfo' | 'os' | 'given';
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

/**
 * The process around the engine: Node, V8's heap, SQLite, MQTT and the daemon's queues. Measured:
 * `edgellm serve --demo` (a 1.2 MB model) peaks at 106 MiB resident on x86-64 with Node 20, a
 * `generate` process at 89 MiB; rounded up for V8's heap growing under load.
 */
export const RUNTIME_BYTES = 128 * 1024 ** 2;

/**
 * What running a model takes, by part: the one sum `edgellm inspect` and `edgellm doctor` print.
 * Weights are memory-mapped, but count in full: paged out, every token reads them from disk again.
 */
export interface MemoryNeeds {
  weightBytes: number;
  /** One KV cache per sequence decoded at once, each at req.context_size positions. */
  kvBytes: number;
  sequences: number;
  /** The forward pass's activations and one row of logits. */
  scratchBytes: number;
  runtimeBytes: number;
  /** The sum of the above. */
  neededBytes: number;
}

export function memoryNeeds(req: ModelRequirements, sequences = 1): MemoryNeeds {
  const kvBytes = req.kv_bytes_per_sequence * sequences;
  const scratchBytes = req.scratch_bytes + req.n_vocab * 4;
  return {
    weightBytes: req.weight_bytes,
    kvBytes,
    sequences,
    scratchBytes,
    runtimeBytes: RUNTIME_BYTES,
    neededBytes: req.weight_bytes + kvBytes + scratchBytes + RUNTIME_BYTES,
  };
}

export interface MemoryFit extends MemoryNeeds {
  /**
   * fits: needed <= available. tight: more than is available now but less than the total
   * (close other programs, or the page cache must give way). too-big: more than the device has.
   */
  verdict: 'fits' | 'tight' | 'too-big';
}

export function memoryFit(req: ModelRequirements, mem: DeviceMemory, sequences = 1): MemoryFit {
  const needs = memoryNeeds(req, sequences);
  const n = needs.neededBytes;
  return { ...needs, verdict: n <= mem.availableBytes ? 'fits' : n <= mem.totalBytes ? 'tight' : 'too-big' };
}

/**
 * The breakdown both commands print, e.g. "131 MiB = weights 2.57 MiB + KV cache 1.25 MiB (1 sequence
 * of 256 positions) + scratch 209 KiB + runtime 128 MiB"; `format` writes a byte count.
 */
export function describeNeeds(needs: MemoryNeeds, contextSize: number, format: (bytes: number) => string): string {
  const seqs = `${needs.sequences} sequence${needs.sequences === 1 ? '' : 's'}`;
  return (
    `${format(needs.neededBytes)} = weights ${format(needs.weightBytes)} + KV cache ${format(needs.kvBytes)} (${seqs} of ${contextSize} positions)` +
    ` + scratch ${format(needs.scratchBytes)} + runtime ${format(needs.runtimeBytes)}`
  );
}

/** What the OS and its services hold on a device judged by its RAM size alone (`inspect --memory`). */
export const OS_RESERVE_BYTES = 512 * 1024 ** 2;

/** A device of `totalBytes` RAM, OS_RESERVE_BYTES of it taken: what `inspect --memory 8G` judges against. */
export function deviceOfSize(totalBytes: number): DeviceMemory {
  return { totalBytes, availableBytes: Math.max(0, totalBytes - OS_RESERVE_BYTES), source: 'given' };
}

/**
 * Sustained read speeds, bytes per second, of a Raspberry Pi 5's storage for the ~1 MB reads one
 * expert's slice is: `sd` a class A2 card in the SDR104 slot (about 90 MB/s sequential at best;
 * 80 counts the gaps between slices), `nvme` an SSD on the PCIe 2.0 x1 link the Pi 5 runs by
 * default (about 450 MB/s at the link; 400 for the same reason).
 */
export const STORAGE_READ_BYTES_PER_S = { sd: 80e6, nvme: 400e6 } as const;
export type StorageKind = keyof typeof STORAGE_READ_BYTES_PER_S;

/**
 * Where a model's weights live on a device:
 * - fits-in-ram: everything (memoryFit's neededBytes) fits in what is available;
 * - runs-from-page-cache: an MoE whose routed experts do not all fit, but whose always-touched
 *   part (everything else: attention, router, embeddings, KV cache, scratch, runtime) does: the
 *   experts are read from storage as the router picks them, into what memory is left;
 * - does-not-fit: the always-touched part alone is more than what is available, so every token
 *   would read most of the model from storage.
 */
export interface Residency {
  verdict: 'fits-in-ram' | 'runs-from-page-cache' | 'does-not-fit';
  availableBytes: number;
  /** neededBytes less the routed experts. */
  alwaysTouchedBytes: number;
  expertBytes: number;
  /** The routed experts one token reads: n_expert_used / n_expert of them, in every MoE layer. */
  expertBytesPerToken: number;
  /** What is left of availableBytes for cached experts (0 .. expertBytes). */
  cachedExpertBytes: number;
  /**
   * Expected bytes one token reads from storage: expertBytesPerToken x the share of experts not
   * cached, with the router's picks taken as uniform and independent (a cache holding a fraction
   * f of the experts then hits with probability f). Real routers favour some experts, so this errs
   * on the slow side. 0 when everything fits.
   */
  storageBytesPerToken: number;
  /** readBytesPerS / storageBytesPerToken: the tokens/s storage allows (compute comes on top). */
  tokensPerSecondBound?: number;
}

/** `neededBytes` is memoryFit's sum for the file; `readBytesPerS` the storage's (STORAGE_READ_BYTES_PER_S). */
export function residency(req: ModelRequirements, neededBytes: number, mem: DeviceMemory, readBytesPerS: number): Residency {
  const available = mem.availableBytes;
  const expertBytes = req.n_expert > 0 ? req.expert_bytes : 0;
  const alwaysTouchedBytes = neededBytes - expertBytes;
  const expertBytesPerToken = req.n_expert > 0 ? (expertBytes * req.n_expert_used) / req.n_expert : 0;
  const base = { availableBytes: available, alwaysTouchedBytes, expertBytes, expertBytesPerToken };
  if (neededBytes <= available) {
    return { ...base, verdict: 'fits-in-ram', cachedExpertBytes: expertBytes, storageBytesPerToken: 0 };
  }
  if (expertBytes === 0 || alwaysTouchedBytes > available) {
    return { ...base, verdict: 'does-not-fit', cachedExpertBytes: 0, storageBytesPerToken: 0 };
  }
  const cachedExpertBytes = available - alwaysTouchedBytes;
  const storageBytesPerToken = expertBytesPerToken * (1 - cachedExpertBytes / expertBytes);
  return { ...base, verdict: 'runs-from-page-cache', cachedExpertBytes, storageBytesPerToken, tokensPerSecondBound: readBytesPerS / storageBytesPerToken };
}
