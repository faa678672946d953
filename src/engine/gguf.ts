/**
 * What a GGUF model file holds, read by the native engine's bounds-checked parser
 * (native/src/gguf): version, metadata and the tensor table. No weights are read.
 */
import { fromNative } from '../errors.js';
import { loadAddon } from './native.js';

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

/**
 * Reads a GGUF file's header, metadata and tensor table.
 * Throws EdgeError E_MODEL_NOT_FOUND, E_MODEL_CORRUPT or E_MODEL_UNSUPPORTED with a message that
 * names the file and what is wrong with it.
 */
export function readGgufInfo(path: string): GgufInfo {
  try {
    return loadAddon().ggufInfo(path);
  } catch (err) {
    throw fromNative(err);
  }
}
