/**
 * Quantizes a GGUF model to Q4_0 or Q8_0, as llama.cpp's quantize does with its default rules,
 * streaming one chunk of rows at a time (memory stays at a few chunks, whatever the model size).
 *
 * Which tensors change (llama.cpp's rule): 2-D+ tensors named *weight, except norms, MoE router
 * (ffn_gate_inp) and positional/token-type embeddings. 1-D tensors (norms, biases) are copied.
 * llama.cpp puts output.weight (or the tied token_embd.weight) at Q6_K; edgellm has no Q6_K, so
 * with Q4_0 it keeps that tensor at Q8_0. A tensor whose rows are not a multiple of 32 elements
 * cannot hold Q4_0/Q8_0 blocks and stays in its type (the summary lists it).
 *
 * Conversion is the native reference quantizer (the same bytes as ggml), several chunks in
 * flight on libuv workers; the TS encoder (quant.ts) gives the same bytes, only slower.
 */
import { existsSync, realpathSync, statSync } from 'node:fs';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { resolve } from 'node:path';
import { EdgeError, fromNative } from '../errors.js';
import { readGgufInfo, type GgufInfo, type GgufTensorInfo, type GgufTensorType } from './gguf.js';
import { GgufWriter, meta, type GgufItemType, type GgufWriteArray, type GgufWriteValue } from './gguf-writer.js';
import { loadAddon } from './native.js';
import { decodeTensor, encodeTensor, typeBytes, QK } from './quant.js';

export type QuantizeType = 'q4_0' | 'q8_0';
export const QUANTIZE_TYPES: readonly QuantizeType[] = ['q4_0', 'q8_0'];

/** ggml's llama_ftype values written to general.file_type. */
const FILE_TYPE: Record<QuantizeType, number> = { q4_0: 2, q8_0: 7 };
/** ggml's GGML_QNT_VERSION, written to general.quantization_version. */
const QUANTIZATION_VERSION = 2;
/** Source bytes converted per call: big enough to amortize a call, small enough to bound memory. */
const CHUNK_BYTES = 4 << 20;

export interface QuantizeOptions {
  type: QuantizeType;
  /** Chunks converted at once (default: physical cores, at most 4). */
  threads?: number;
  /** Replace an existing output file. */
  force?: boolean;
  onProgress?: (p: QuantizeProgress) => void;
  /** @internal 'js' runs the TS reference encoder (benchmarks and tests); default 'native'. */
  encoder?: 'native' | 'js';
}

export interface QuantizeProgress {
  /** 1-based index of the tensor being written, of `tensors`. */
  tensor: number;
  tensors: number;
  name: string;
  /** Source tensor bytes processed so far, of bytesTotal. */
  bytesDone: number;
  bytesTotal: number;
  seconds: number;
}

export type TensorAction = 'quantize' | 'copy';

export interface TensorPlan {
  name: string;
  shape: number[];
  from: GgufTensorType;
  to: GgufTensorType;
  action: TensorAction;
  /** Why a weight matrix is not in the requested type. */
  note?: 'rows-not-blocks' | 'output-q8_0';
}

export interface QuantizeSummary {
  input: string;
  output: string;
  type: QuantizeType;
  tensors: number;
  quantized: number;
  copied: number;
  /** Tensors left in their type because their rows are not a multiple of 32 elements. */
  keptRows: Array<{ name: string; type: GgufTensorType; rowLength: number }>;
  /** output.weight (or tied token_embd) written as Q8_0 for a Q4_0 model. */
  outputQ8: string[];
  inBytes: number;
  outBytes: number;
  seconds: number;
  /** Source tensor megabytes (1e6 bytes) per second. */
  mbPerSecond: number;
  plan: TensorPlan[];
}

function bad(message: string): EdgeError {
  return new EdgeError('E_BAD_ARGUMENT', message);
}

/** llama.cpp's "should this tensor be quantized" test (the parts that apply to edgellm's architectures). */
export function isQuantizable(t: Pick<GgufTensorInfo, 'name' | 'shape'>): boolean {
  const n = t.name;
  return (
    n.endsWith('weight') &&
    t.shape.some((d, i) => i > 0 && d > 1) &&  // ggml_n_dims >= 2
    !n.includes('_norm.weight') &&
    !n.includes('ffn_gate_inp.weight') &&
    n !== 'position_embd.weight' &&
    n !== 'token_types.weight'
  );
}

/** What happens to each tensor. Throws E_MODEL_UNSUPPORTED for a tensor that would need converting from Q4_0. */
export function planQuantization(info: GgufInfo, type: QuantizeType, path = 'the model'): TensorPlan[] {
  const target: GgufTensorType = type === 'q4_0' ? 'Q4_0' : 'Q8_0';
  const hasOutput = info.tensors.some((t) => t.name === 'output.weight');
  return info.tensors.map((t): TensorPlan => {
    const base = { name: t.name, shape: t.shape, from: t.type };
    if (!isQuantizable(t)) return { ...base, to: t.type, action: 'copy' };
    const isOutput = t.name === 'output.weight' || (!hasOutput && t.name === 'token_embd.weight');
    const to: GgufTensorType = isOutput && target === 'Q4_0' ? 'Q8_0' : target;
    const note = to !== target ? { note: 'output-q8_0' as const } : {};
    if (t.shape[0]! % QK !== 0) return { ...base, to: t.type, action: 'copy', note: 'rows-not-blocks' };
    if (t.type === to) return { ...base, to, action: 'copy', ...note };
    if (t.type === 'Q4_0') {
      throw new EdgeError(
        'E_MODEL_UNSUPPORTED',
        `${path}: tensor '${t.name}' is Q4_0 and would have to become ${to}; edgellm quantizes from F32, F16, BF16 ` +
          'or Q8_0 tensors: start from the F16/F32 model',
      );
    }
    return { ...base, to, action: 'quantize', ...note };
  });
}

/** A metadata value as read by readGgufInfo, with its GGUF type name, back to a writer value. */
function toWriteValue(type: string, value: unknown): GgufWriteValue {
  const m = /^array\[(.*)\]$/.exec(type);
  if (!m) return { type, value } as GgufWriteValue;
  const item = m[1]!;
  if (item.startsWith('array[')) {
    const items = (value as unknown[]).map((v) => toWriteValue(item, v) as GgufWriteArray);
    return meta.array('array', items);
  }
  return meta.array(item as GgufItemType, value as ArrayLike<unknown>);
}

function sameFile(a: string, b: string): boolean {
  if (resolve(a) === resolve(b)) return true;
  if (!existsSync(b)) return false;
  try {
    if (realpathSync(a) === realpathSync(b)) return true;
    const sa = statSync(a);
    const sb = statSync(b);
    return sa.dev === sb.dev && sa.ino === sb.ino;
  } catch {
    return false;
  }
}

async function readFully(fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) throw new EdgeError('E_MODEL_CORRUPT', `the model file ended while reading tensor data at byte ${position + done}`);
    done += bytesRead;
  }
}

type Convert = (src: Uint8Array, from: GgufTensorType, to: GgufTensorType, rowLength: number) => Promise<Uint8Array>;

const convertNative: Convert = async (src, from, to, rowLength) => {
  try {
    return await loadAddon().convertRows(src, from, to, rowLength);
  } catch (err) {
    throw fromNative(err);
  }
};

// Whole rows whose length is a multiple of 32 are whole blocks, so the chunk converts as one run.
const convertJs: Convert = async (src, from, to) => {
  const n = from === 'Q4_0' || from === 'Q8_0' ? (src.length / typeBytes(from, QK)) * QK : src.length / typeBytes(from, 1);
  return encodeTensor(to, decodeTensor(from, src, n));
};

/**
 * Rows of one tensor, read and converted a chunk at a time with up to `inFlight` chunks
 * converting at once, yielded in order. `progress` gets the source bytes of each finished chunk.
 */
async function* tensorChunks(
  fh: FileHandle, t: GgufTensorInfo, plan: TensorPlan, inFlight: number, convert: Convert, progress: (n: number) => void,
): AsyncGenerator<Uint8Array> {
  const rowLength = t.shape[0]!;
  const rows = t.shape.slice(1).reduce((a, b) => a * b, 1);
  const rowBytes = t.bytes / rows;
  const perChunk = Math.max(1, Math.floor(CHUNK_BYTES / rowBytes));
  const pending: Array<Promise<[Uint8Array, number]>> = [];
  let next = 0;
  while (next < rows || pending.length > 0) {
    while (pending.length < inFlight && next < rows) {
      const n = Math.min(perChunk, rows - next);
      const at = t.offset + next * rowBytes;
      const job = (async (): Promise<[Uint8Array, number]> => {
        const src = new Uint8Array(n * rowBytes);
        await readFully(fh, src, at);
        const out = plan.action === 'copy' ? src : await convert(src, plan.from, plan.to, rowLength);
        return [out, src.length];
      })();
      job.catch(() => undefined);  // awaited below in order; this keeps a failure from being "unhandled" meanwhile
      pending.push(job);
      next += n;
    }
    const [out, srcBytes] = await pending.shift()!;
    progress(srcBytes);
    yield out;
  }
}

/**
 * Writes `output`, a copy of `input` with its weight matrices quantized. The file appears only
 * when complete (written to OUTPUT.tmp, then renamed). Throws EdgeError: E_BAD_ARGUMENT (bad type,
 * OUTPUT is INPUT, OUTPUT exists without force), E_MODEL_* from reading INPUT, E_MODEL_UNSUPPORTED
 * for a tensor it cannot convert (before anything is written).
 */
export async function quantizeModel(input: string, output: string, opts: QuantizeOptions): Promise<QuantizeSummary> {
  const type = opts.type;
  if (!QUANTIZE_TYPES.includes(type)) {
    throw bad(`cannot write type "${String(type)}": edgellm quantizes to ${QUANTIZE_TYPES.join(' or ')}`);
  }
  if (sameFile(input, output)) throw bad(`the output ${output} is the input file; choose another output path`);
  if (existsSync(output) && !opts.force) throw bad(`${output} exists; pass --force to replace it`);
  const info = readGgufInfo(input);
  const plan = planQuantization(info, type, input);
  const inFlight = opts.threads ?? loadAddon().cpuInfo().defaultThreads;
  const convert = opts.encoder === 'js' ? convertJs : convertNative;

  const w = new GgufWriter({ alignment: info.alignment });
  for (const [key, value] of Object.entries(info.metadata)) {
    if (key === 'general.alignment') continue;  // the writer's constructor owns it
    w.setMeta(key, toWriteValue(info.metadataTypes[key]!, value));
  }
  w.setMeta('general.file_type', meta.uint32(FILE_TYPE[type]));
  w.setMeta('general.quantization_version', meta.uint32(QUANTIZATION_VERSION));

  const bytesTotal = info.tensors.reduce((n, t) => n + t.bytes, 0);
  let bytesDone = 0;
  const started = performance.now();
  const seconds = () => (performance.now() - started) / 1000;
  const fh = await open(input, 'r');
  try {
    info.tensors.forEach((t, i) => {
      const p = plan[i]!;
      const report = (n: number) => {
        bytesDone += n;
        opts.onProgress?.({ tensor: i + 1, tensors: info.tensors.length, name: t.name, bytesDone, bytesTotal, seconds: seconds() });
      };
      w.addTensor({ name: t.name, type: p.to, shape: t.shape, data: { chunks: () => tensorChunks(fh, t, p, inFlight, convert, report) } });
    });
    const tmp = `${output}.tmp`;
    await w.writeFileAsync(tmp);
    try {
      await rename(tmp, output);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
  } finally {
    await fh.close();
  }

  const secs = seconds();
  return {
    input,
    output,
    type,
    tensors: plan.length,
    quantized: plan.filter((p) => p.action === 'quantize').length,
    copied: plan.filter((p) => p.action === 'copy').length,
    keptRows: plan.filter((p) => p.note === 'rows-not-blocks').map((p) => ({ name: p.name, type: p.to, rowLength: p.shape[0]! })),
    outputQ8: plan.filter((p) => p.note === 'output-q8_0').map((p) => p.name),
    inBytes: info.fileSize,
    outBytes: statSync(output).size,
    seconds: secs,
    mbPerSecond: bytesTotal / 1e6 / Math.max(secs, 1e-9),
    plan,
  };
}
