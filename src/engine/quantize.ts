/**
 * Quantizes a GGUF model into one of llama.cpp's mixes (q4_k_m, q4_0, ...) with llama.cpp's own
 * per-tensor rules (quant-mix.ts), streaming one chunk of rows at a time (memory stays at a few
 * chunks, whatever the model size). The file is what llama.cpp's quantizer (llama_model_quantize,
 * no importance matrix) writes from the same F32/F16 input: the same tensor types, order and bytes,
 * the same metadata with general.quantization_version and general.file_type moved to the end.
 *
 * Conversion is the native reference quantizer (ggml's bytes), several chunks in flight on libuv
 * workers; the TS encoder (quant.ts, Q4_0 and Q8_0 only) gives the same bytes, only slower.
 * Requantizing a tensor that is already quantized is refused unless allowRequantize: its rounding
 * error adds to the new type's.
 */
import { existsSync, realpathSync, statSync } from 'node:fs';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { resolve } from 'node:path';
import { EdgeError } from '../errors.js';
import { readGgufInfo, type GgufInfo, type GgufTensorInfo, type GgufTensorType } from './gguf.js';
import { GgufWriter, meta, writeValueOf } from './gguf-writer.js';
import { callAddon, loadAddon } from './native.js';
import { MIXES, QUANTIZE_TYPES, chooseTypes, type QuantizeType } from './quant-mix.js';
import { decodeTensor, encodeTensor, blockElems, typeBytes } from './quant.js';

export { QUANTIZE_TYPES, type QuantizeType } from './quant-mix.js';

/** ggml's GGML_QNT_VERSION, written to general.quantization_version. */
const QUANTIZATION_VERSION = 2;
/** Keys llama.cpp's quantizer drops (a split model is written whole) or rewrites at the end. */
const DROPPED_KEYS = new Set(['split.no', 'split.count', 'split.tensors.count', 'general.quantization_version', 'general.file_type']);
/** Source bytes converted per call: big enough to amortize a call, small enough to bound memory. */
const CHUNK_BYTES = 4 << 20;
/** The float types: converting from them is quantizing; from any other type it is requantizing. */
const FLOAT_TYPES: ReadonlySet<GgufTensorType> = new Set(['F32', 'F16', 'BF16']);

export interface QuantizeOptions {
  type: QuantizeType;
  /** Chunks converted at once (default: cpuInfo().defaultThreads). */
  threads?: number;
  /** Replace an existing output file. */
  force?: boolean;
  /** Convert tensors that are already quantized (through f32: their error adds to the new type's). */
  allowRequantize?: boolean;
  onProgress?: (p: QuantizeProgress) => void;
  /** @internal 'js' runs the TS reference encoder (benchmarks and tests; Q4_0/Q8_0 only); default 'native'. */
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
  /** The type llama.cpp's rules chose when the rows are not whole blocks of it (`to` is its fallback). */
  wanted?: GgufTensorType;
}

export interface QuantizeSummary {
  input: string;
  output: string;
  type: QuantizeType;
  /** llama.cpp's llama_ftype, as written to general.file_type. */
  fileType: number;
  tensors: number;
  quantized: number;
  copied: number;
  /** Output tensor type -> number of tensors. */
  types: Partial<Record<GgufTensorType, number>>;
  /** Tensors whose rows are not whole blocks of the type the rules chose, and what they became. */
  fallbacks: Array<{ name: string; wanted: GgufTensorType; type: GgufTensorType; rowLength: number }>;
  inBytes: number;
  outBytes: number;
  seconds: number;
  /** Source tensor megabytes (1e6 bytes) per second. */
  mbPerSecond: number;
  /** In the output's (llama.cpp's) tensor order. */
  plan: TensorPlan[];
}

function bad(message: string): EdgeError {
  return new EdgeError('E_BAD_ARGUMENT', message);
}

/**
 * What happens to each tensor, in the order they are written. Throws E_MODEL_UNSUPPORTED for a
 * tensor that is already quantized and would change type, unless allowRequantize.
 */
export function planQuantization(info: GgufInfo, type: QuantizeType, path = 'the model', opts: { allowRequantize?: boolean } = {}): TensorPlan[] {
  const byName = new Map(info.tensors.map((t) => [t.name, t]));
  let choices;
  try {
    choices = chooseTypes(info, type);
  } catch (err) {
    throw new EdgeError('E_MODEL_UNSUPPORTED', `${path}: ${(err as Error).message}`);
  }
  return choices.map((c): TensorPlan => {
    const t = byName.get(c.name)!;
    const plan: TensorPlan = {
      name: t.name, shape: t.shape, from: t.type, to: c.type, action: c.type === t.type ? 'copy' : 'quantize',
      ...(c.wanted ? { wanted: c.wanted } : {}),
    };
    if (plan.action === 'quantize' && !FLOAT_TYPES.has(t.type) && !opts.allowRequantize) {
      throw new EdgeError(
        'E_MODEL_UNSUPPORTED',
        `${path}: tensor '${t.name}' is already quantized (${t.type}); requantizing it to ${c.type} loses accuracy ` +
          `(${t.type}'s rounding error stays and ${c.type}'s adds to it): quantize the F16/F32 original instead, ` +
          'or pass --allow-requantize to convert it anyway',
      );
    }
    return plan;
  });
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
  return await callAddon((addon) => addon.convertRows(src, from, to, rowLength));
};

// Whole rows are whole blocks, so the chunk converts as one run.
const convertJs: Convert = async (src, from, to) => {
  const n = (src.length / typeBytes(from, blockElems(from))) * blockElems(from);
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
 * Writes `output`, `input` in mix `opts.type`. The file appears only when complete (written to
 * OUTPUT.tmp, then renamed). Throws EdgeError: E_BAD_ARGUMENT (bad type, OUTPUT is INPUT, OUTPUT
 * exists without force), E_MODEL_* from reading INPUT, E_MODEL_UNSUPPORTED for a quantized tensor
 * without allowRequantize (before anything is written).
 */
export async function quantizeModel(input: string, output: string, opts: QuantizeOptions): Promise<QuantizeSummary> {
  const type = opts.type;
  if (!QUANTIZE_TYPES.includes(type)) {
    throw bad(`cannot write type "${String(type)}": edgellm quantizes to ${QUANTIZE_TYPES.join(', ')}`);
  }
  if (sameFile(input, output)) throw bad(`the output ${output} is the input file; choose another output path`);
  if (existsSync(output) && !opts.force) throw bad(`${output} exists; pass --force to replace it`);
  const info = readGgufInfo(input);
  const plan = planQuantization(info, type, input, opts);
  const inFlight = opts.threads ?? loadAddon().cpuInfo().defaultThreads;
  const convert = opts.encoder === 'js' ? convertJs : convertNative;
  const fileType = MIXES[type].fileType;

  // llama.cpp copies every key, then sets quantization_version and file_type (removed and appended).
  const w = new GgufWriter({ alignment: info.alignment });
  for (const [key, value] of Object.entries(info.metadata)) {
    if (key === 'general.alignment' || DROPPED_KEYS.has(key)) continue;  // the writer's constructor owns the alignment
    w.setMeta(key, writeValueOf(info.metadataTypes[key]!, value));
  }
  w.setMeta('general.quantization_version', meta.uint32(QUANTIZATION_VERSION));
  w.setMeta('general.file_type', meta.uint32(fileType));

  const tensors = new Map(info.tensors.map((t) => [t.name, t]));
  const bytesTotal = info.tensors.reduce((n, t) => n + t.bytes, 0);
  let bytesDone = 0;
  const started = performance.now();
  const seconds = () => (performance.now() - started) / 1000;
  const fh = await open(input, 'r');
  try {
    plan.forEach((p, i) => {
      const t = tensors.get(p.name)!;
      const report = (n: number) => {
        bytesDone += n;
        opts.onProgress?.({ tensor: i + 1, tensors: plan.length, name: t.name, bytesDone, bytesTotal, seconds: seconds() });
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
  const types: Partial<Record<GgufTensorType, number>> = {};
  for (const p of plan) types[p.to] = (types[p.to] ?? 0) + 1;
  return {
    input,
    output,
    type,
    fileType,
    tensors: plan.length,
    quantized: plan.filter((p) => p.action === 'quantize').length,
    copied: plan.filter((p) => p.action === 'copy').length,
    types,
    fallbacks: plan.flatMap((p) => (p.wanted ? [{ name: p.name, wanted: p.wanted, type: p.to, rowLength: p.shape[0]! }] : [])),
    inBytes: info.fileSize,
    outBytes: statSync(output).size,
    seconds: secs,
    mbPerSecond: bytesTotal / 1e6 / Math.max(secs, 1e-9),
    plan,
  };
}
