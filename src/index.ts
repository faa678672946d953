/**
 * edgellm's public API.
 *
 * @packageDocumentation
 */
import { fromNative } from './errors.js';
import { loadAddon, type CpuInfo, type KernelBenchOptions, type KernelBenchRow } from './engine/native.js';

export { EdgeError, type ErrorCode } from './errors.js';
export type { CpuInfo, KernelBenchOptions, KernelBenchRow } from './engine/native.js';
export {
  readGgufInfo,
  type GgufInfo,
  type GgufMetadataValue,
  type GgufTensorInfo,
  type GgufTensorType,
} from './engine/gguf.js';
export {
  loadModel,
  logSoftmax,
  Model,
  type EvalLogitsOptions,
  type LayerTrace,
  type LoadModelOptions,
  type LoraAdapter,
  type LoraChoice,
  type ModelArchitecture,
  type ModelInfo,
  type ModelTrace,
  type TraceOptions,
} from './engine/model.js';
export {
  Tokenizer,
  StreamDecoder,
  type EncodeOptions,
  type DecodeOptions,
  type TiktokenSpecials,
} from './engine/tokenizer/index.js';
export {
  renderChat,
  renderChatFor,
  validateMessages,
  chatStopTokens,
  chatStopStrings,
  CHAT_ROLES,
  FALLBACK_END_OF_TURN,
  type ChatMessage,
  type ChatRole,
  type RenderChatOptions,
} from './engine/chat.js';
export { StopMatcher, type StopStep } from './engine/stop.js';
export { MAX_TOP_LOGPROBS, type TokenLogprob, type TopLogprob } from './engine/logprobs.js';
export {
  Generation,
  SAMPLING_DEFAULTS,
  type DecodeState,
  type FinishReason,
  type GenerateRequest,
  type GenerateResult,
  type GenerateTimings,
  type GenerateUsage,
  type SamplingSettings,
} from './engine/generate.js';

/** What this CPU can run and which kernel table edgellm picked for it. */
export function cpuInfo(): CpuInfo {
  try {
    return loadAddon().cpuInfo();
  } catch (err) {
    throw fromNative(err);
  }
}

/**
 * Measures Q4_0 GEMV throughput against this machine's read bandwidth, off the event loop.
 * Rows come back in the order they were measured: read_bandwidth first for each thread count.
 */
export async function benchKernels(opts: KernelBenchOptions = {}): Promise<KernelBenchRow[]> {
  try {
    return await loadAddon().benchKernels(opts);
  } catch (err) {
    throw fromNative(err);
  }
}
