/**
 * Loads the C++ addon (build/Release/edgellm.node, built by cmake-js at `npm install`).
 * EDGELLM_ADDON overrides the path (the offline bundle sets it).
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EdgeError } from '../errors.js';
import type { GgufInfo } from './gguf.js';
import type { NativeModel, NativeLoadOptions } from './model.js';
import type { ModelRequirements, ModelRequirementsOptions } from './requirements.js';
import type { ModelBenchOptions, ModelBenchResult } from './bench-model.js';

export interface CpuInfo {
  arch: string;
  model: string;
  logicalCores: number;
  physicalCores: number;
  /** Threads a model uses unless told otherwise: physical cores, at most 4. */
  defaultThreads: number;
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
  modelConfig(path: string, opts?: ModelRequirementsOptions): Omit<ModelRequirements, 'tokenizer'>;
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
