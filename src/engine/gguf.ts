/**
 * What a GGUF model file holds, read by the native engine's bounds-checked parser
 * (native/src/gguf): version, metadata and the tensor table. No weights are read.
 */
import { callAddon } from './native.js';
import type { GgufInfo } from './native.js';
export type { GgufTensorType, GgufMetadataValue, GgufTensorInfo, GgufInfo } from './native.js';





/**
 * Reads a GGUF file's header, metadata and tensor table.
 * Throws EdgeError E_MODEL_NOT_FOUND, E_MODEL_CORRUPT or E_MODEL_UNSUPPORTED with a message that
 * names the file and what is wrong with it.
 */
export function readGgufInfo(path: string): GgufInfo {
  return callAddon((addon) => addon.ggufInfo(path));
}
