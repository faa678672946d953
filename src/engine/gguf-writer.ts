/**
 * Writes GGUF v3 files: typed metadata, then tensor infos, then tensor data, each tensor at an
 * aligned offset. Tensor data is produced and written one tensor at a time (a tensor's data may be
 * a function called when its turn comes), so a large model never has to sit in memory whole.
 *
 *   const w = new GgufWriter();
 *   w.setMeta('general.architecture', meta.string('llama'));
 *   w.setMeta('llama.block_count', meta.uint32(2));
 *   w.addTensor({ name: 'token_embd.weight', type: 'Q4_0', shape: [64, 512], data: floats });
 *   w.writeFile('model.gguf');
 *
 * A tensor's data may also be a stream of raw chunks ({ chunks: () => AsyncIterable<Uint8Array> }),
 * written by writeAsync / writeFileAsync: `edgellm quantize` converts a large tensor a few
 * megabytes at a time.
 */
import { closeSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { EdgeError } from '../errors.js';
import type { GgufTensorType } from './gguf.js';
import { blockElems, encodeTensor, typeBytes } from './quant.js';

export type GgufNumberType = 'uint8' | 'int8' | 'uint16' | 'int16' | 'uint32' | 'int32' | 'float32' | 'float64';
export type GgufBigType = 'uint64' | 'int64';
export type GgufItemType = GgufNumberType | GgufBigType | 'bool' | 'string' | 'array';

/** A metadata value with its GGUF type. */
export type GgufWriteValue =
  | { type: GgufNumberType; value: number }
  | { type: GgufBigType; value: bigint | number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | GgufWriteArray;

export type GgufWriteArray =
  | { type: 'array'; itemType: GgufNumberType; value: ArrayLike<number> }
  | { type: 'array'; itemType: GgufBigType; value: ArrayLike<bigint | number> }
  | { type: 'array'; itemType: 'bool'; value: ArrayLike<boolean> }
  | { type: 'array'; itemType: 'string'; value: ArrayLike<string> }
  | { type: 'array'; itemType: 'array'; value: ArrayLike<GgufWriteArray> };

/** Shorthands: meta.uint32(5), meta.string('llama'), meta.array('float32', scores)... */
export const meta = {
  uint8: (value: number): GgufWriteValue => ({ type: 'uint8', value }),
  int8: (value: number): GgufWriteValue => ({ type: 'int8', value }),
  uint16: (value: number): GgufWriteValue => ({ type: 'uint16', value }),
  int16: (value: number): GgufWriteValue => ({ type: 'int16', value }),
  uint32: (value: number): GgufWriteValue => ({ type: 'uint32', value }),
  int32: (value: number): GgufWriteValue => ({ type: 'int32', value }),
  float32: (value: number): GgufWriteValue => ({ type: 'float32', value }),
  float64: (value: number): GgufWriteValue => ({ type: 'float64', value }),
  uint64: (value: bigint | number): GgufWriteValue => ({ type: 'uint64', value }),
  int64: (value: bigint | number): GgufWriteValue => ({ type: 'int64', value }),
  bool: (value: boolean): GgufWriteValue => ({ type: 'bool', value }),
  string: (value: string): GgufWriteValue => ({ type: 'string', value }),
  array: (itemType: GgufItemType, value: ArrayLike<unknown>): GgufWriteArray =>
    ({ type: 'array', itemType, value }) as GgufWriteArray,
};

/** A metadata value as read by readGgufInfo, with its GGUF type name, back to a writer value. */
export function writeValueOf(type: string, value: unknown): GgufWriteValue {
  const m = /^array\[(.*)\]$/.exec(type);
  if (!m) return { type, value } as GgufWriteValue;
  const item = m[1]!;
  if (item.startsWith('array[')) {
    const items = (value as unknown[]).map((v) => writeValueOf(item, v) as GgufWriteArray);
    return meta.array('array', items);
  }
  return meta.array(item as GgufItemType, value as ArrayLike<unknown>);
}

/** Tensor data: f32 values to encode as `type`, or the raw bytes already in `type`. */
export type GgufTensorData = Float32Array | number[] | Uint8Array;

/** Tensor data as raw bytes in the tensor's type, produced in order, chunk by chunk (async writes only). */
export interface GgufTensorStream {
  chunks: () => AsyncIterable<Uint8Array>;
}

export interface GgufTensorInput {
  name: string;
  type: GgufTensorType;
  /** ggml's ne: shape[0] is the row length (a multiple of the type's block: 32, or 256 for the K-quants and IQ4_XS); 1 to 4 dimensions. */
  shape: number[];
  /** The data, a function producing it when the tensor is written, or a stream of raw chunks. */
  data: GgufTensorData | (() => GgufTensorData) | GgufTensorStream;
}

const VALUE_TYPE: Record<GgufItemType, number> = {
  uint8: 0, int8: 1, uint16: 2, int16: 3, uint32: 4, int32: 5, float32: 6, bool: 7,
  string: 8, array: 9, uint64: 10, int64: 11, float64: 12,
};
/** ggml_type numbers, as GGUF stores them. */
export const GGML_TYPE: Readonly<Record<GgufTensorType, number>> = {
  F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8,
  Q2_K: 10, Q3_K: 11, Q4_K: 12, Q5_K: 13, Q6_K: 14, IQ4_NL: 20, IQ4_XS: 23, BF16: 30,
};

const utf8 = new TextEncoder();
const MAX_TENSOR_NAME_BYTES = 64;

/** A growable little-endian byte buffer for the header. */
class ByteSink {
  private buf = new Uint8Array(4096);
  private view = new DataView(this.buf.buffer);
  length = 0;

  private reserve(n: number): number {
    if (this.length + n > this.buf.length) {
      const next = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
      next.set(this.buf.subarray(0, this.length));
      this.buf = next;
      this.view = new DataView(next.buffer);
    }
    const at = this.length;
    this.length += n;
    return at;
  }
  // reserve() may replace this.buf and this.view, so each write reserves first and only then
  // reads the (possibly new) buffer: `this.view.setX(this.reserve(n), ...)` would write to the old one.
  u8(v: number) { const at = this.reserve(1); this.view.setUint8(at, v); }
  i8(v: number) { const at = this.reserve(1); this.view.setInt8(at, v); }
  u16(v: number) { const at = this.reserve(2); this.view.setUint16(at, v, true); }
  i16(v: number) { const at = this.reserve(2); this.view.setInt16(at, v, true); }
  u32(v: number) { const at = this.reserve(4); this.view.setUint32(at, v, true); }
  i32(v: number) { const at = this.reserve(4); this.view.setInt32(at, v, true); }
  f32(v: number) { const at = this.reserve(4); this.view.setFloat32(at, v, true); }
  f64(v: number) { const at = this.reserve(8); this.view.setFloat64(at, v, true); }
  u64(v: bigint) { const at = this.reserve(8); this.view.setBigUint64(at, v, true); }
  i64(v: bigint) { const at = this.reserve(8); this.view.setBigInt64(at, v, true); }
  bytes(b: Uint8Array) { const at = this.reserve(b.length); this.buf.set(b, at); }
  str(s: string) {
    const b = utf8.encode(s);
    this.u64(BigInt(b.length));
    this.bytes(b);
  }
  zeros(n: number) { const at = this.reserve(n); this.buf.fill(0, at, this.length); }
  result(): Uint8Array { return this.buf.subarray(0, this.length); }
}

function bad(message: string): EdgeError {
  return new EdgeError('E_BAD_ARGUMENT', message);
}

function checkInt(key: string, type: string, v: number, lo: number, hi: number): void {
  if (!Number.isInteger(v) || v < lo || v > hi) throw bad(`GGUF key '${key}': ${v} is not a valid ${type}`);
}

function toBig(key: string, type: GgufBigType, v: bigint | number): bigint {
  if (typeof v === 'number' && !Number.isSafeInteger(v)) {
    throw bad(`GGUF key '${key}': ${v} is not a safe integer; pass a bigint for ${type}`);
  }
  const b = BigInt(v);
  const ok = type === 'uint64' ? b >= 0n && b < 1n << 64n : b >= -(1n << 63n) && b < 1n << 63n;
  if (!ok) throw bad(`GGUF key '${key}': ${b} is not a valid ${type}`);
  return b;
}

function writeItem(out: ByteSink, key: string, type: GgufItemType, v: unknown): void {
  switch (type) {
    case 'uint8': checkInt(key, type, v as number, 0, 0xff); out.u8(v as number); break;
    case 'int8': checkInt(key, type, v as number, -0x80, 0x7f); out.i8(v as number); break;
    case 'uint16': checkInt(key, type, v as number, 0, 0xffff); out.u16(v as number); break;
    case 'int16': checkInt(key, type, v as number, -0x8000, 0x7fff); out.i16(v as number); break;
    case 'uint32': checkInt(key, type, v as number, 0, 0xffffffff); out.u32(v as number); break;
    case 'int32': checkInt(key, type, v as number, -0x80000000, 0x7fffffff); out.i32(v as number); break;
    case 'float32': out.f32(v as number); break;
    case 'float64': out.f64(v as number); break;
    case 'uint64': out.u64(toBig(key, type, v as bigint | number)); break;
    case 'int64': out.i64(toBig(key, type, v as bigint | number)); break;
    case 'bool': out.u8(v ? 1 : 0); break;
    case 'string': out.str(String(v)); break;
    case 'array': {
      const a = v as GgufWriteArray;
      if (a?.type !== 'array' || !(a.itemType in VALUE_TYPE)) throw bad(`GGUF key '${key}': bad array value`);
      out.u32(VALUE_TYPE[a.itemType]);
      out.u64(BigInt(a.value.length));
      for (let i = 0; i < a.value.length; i++) writeItem(out, key, a.itemType, a.value[i]);
      break;
    }
  }
}

interface PlannedTensor extends GgufTensorInput {
  bytes: number;
  offset: number;
}

export class GgufWriter {
  readonly alignment: number;
  private readonly kv = new Map<string, GgufWriteValue>();
  private readonly tensors: PlannedTensor[] = [];
  private dataSize = 0;

  /** alignment: of the tensor data, a power of two (default 32, GGUF's default). */
  constructor(opts: { alignment?: number } = {}) {
    const a = opts.alignment ?? 32;
    if (!Number.isInteger(a) || a < 1 || a > 2 ** 30 || (a & (a - 1)) !== 0) {
      throw bad(`GGUF alignment must be a power of two, got ${a}`);
    }
    this.alignment = a;
    if (a !== 32) this.kv.set('general.alignment', meta.uint32(a));
  }

  /** Sets a metadata key (in insertion order; setting a key again replaces its value). */
  setMeta(key: string, value: GgufWriteValue): this {
    if (key === 'general.alignment') throw bad('set general.alignment through the GgufWriter constructor');
    this.kv.set(key, value);
    return this;
  }

  addTensor(t: GgufTensorInput): this {
    if (utf8.encode(t.name).length > MAX_TENSOR_NAME_BYTES) {
      throw bad(`tensor name '${t.name}' is longer than ${MAX_TENSOR_NAME_BYTES} bytes`);
    }
    if (this.tensors.some((p) => p.name === t.name)) throw bad(`tensor '${t.name}' is added twice`);
    if (!(t.type in GGML_TYPE)) throw bad(`tensor '${t.name}': unsupported type ${String(t.type)}`);
    if (t.shape.length < 1 || t.shape.length > 4 || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 1)) {
      throw bad(`tensor '${t.name}': shape [${t.shape.join(', ')}] must have 1 to 4 positive dimensions`);
    }
    if (t.shape[0]! % blockElems(t.type) !== 0) {
      throw bad(`tensor '${t.name}' (${t.type}): row of ${t.shape[0]} elements is not a multiple of ${blockElems(t.type)}`);
    }
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger(n)) throw bad(`tensor '${t.name}': too many elements`);
    const bytes = typeBytes(t.type, n);
    const offset = this.align(this.dataSize);
    this.tensors.push({ ...t, bytes, offset });
    this.dataSize = offset + bytes;
    return this;
  }

  /** Writes the whole file through `sink`, header first, then each tensor's data in order. */
  write(sink: (chunk: Uint8Array) => void): void {
    sink(this.header());
    let at = 0;
    for (const t of this.tensors) {
      if (t.offset > at) sink(new Uint8Array(t.offset - at));
      if (isStream(t.data)) throw bad(`tensor '${t.name}' is streamed: write the file with writeAsync or writeFileAsync`);
      const bytes = this.encode(t);
      sink(bytes);
      at = t.offset + bytes.length;
    }
    if (this.align(at) > at) sink(new Uint8Array(this.align(at) - at));
  }

  /** As write(), awaiting the sink and streamed tensors; a stream must yield exactly the tensor's bytes. */
  async writeAsync(sink: (chunk: Uint8Array) => void | Promise<void>): Promise<void> {
    await sink(this.header());
    let at = 0;
    for (const t of this.tensors) {
      if (t.offset > at) await sink(new Uint8Array(t.offset - at));
      let n = 0;
      if (isStream(t.data)) {
        for await (const chunk of t.data.chunks()) {
          n += chunk.length;
          if (n > t.bytes) break;
          await sink(chunk);
        }
      } else {
        const bytes = this.encode(t);
        n = bytes.length;
        await sink(bytes);
      }
      if (n !== t.bytes) {
        throw bad(`tensor '${t.name}' (${t.type}, shape [${t.shape.join(', ')}]) needs ${t.bytes} bytes, its stream gave ${n > t.bytes ? 'more' : n}`);
      }
      at = t.offset + n;
    }
    if (this.align(at) > at) await sink(new Uint8Array(this.align(at) - at));
  }

  private header(): Uint8Array {
    const head = new ByteSink();
    head.bytes(utf8.encode('GGUF'));
    head.u32(3);
    head.u64(BigInt(this.tensors.length));
    head.u64(BigInt(this.kv.size));
    for (const [key, v] of this.kv) {
      head.str(key);
      head.u32(VALUE_TYPE[v.type]);
      writeItem(head, key, v.type, v.type === 'array' ? v : v.value);
    }
    for (const t of this.tensors) {
      head.str(t.name);
      head.u32(t.shape.length);
      for (const d of t.shape) head.u64(BigInt(d));
      head.u32(GGML_TYPE[t.type]);
      head.u64(BigInt(t.offset));
    }
    head.zeros(this.align(head.length) - head.length);
    return head.result();
  }

  /** The file as one buffer (for tests and small models). */
  toBytes(): Uint8Array {
    const chunks: Uint8Array[] = [];
    this.write((c) => chunks.push(c));
    const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }

  /** Writes the file to `path`, one tensor at a time; a failure removes the partial file. */
  writeFile(path: string): void {
    const fd = openSync(path, 'w');
    try {
      this.write((chunk) => {
        let done = 0;
        while (done < chunk.length) done += writeSync(fd, chunk, done, chunk.length - done);
      });
      closeSync(fd);
    } catch (err) {
      closeSync(fd);
      unlinkSync(path);  // never leave a half-written model behind
      throw err;
    }
  }

  /** Writes the file to `path` with writeAsync; a failure removes the partial file. */
  async writeFileAsync(path: string): Promise<void> {
    const fh = await open(path, 'w');
    try {
      await this.writeAsync(async (chunk) => {
        let done = 0;
        while (done < chunk.length) done += (await fh.write(chunk, done, chunk.length - done)).bytesWritten;
      });
      await fh.close();
    } catch (err) {
      await fh.close().catch(() => undefined);
      await unlink(path).catch(() => undefined);  // never leave a half-written model behind
      throw err;
    }
  }

  private align(n: number): number {
    return Math.ceil(n / this.alignment) * this.alignment;
  }

  private encode(t: PlannedTensor): Uint8Array {
    if (isStream(t.data)) throw bad(`tensor '${t.name}' is streamed`);
    const data = typeof t.data === 'function' ? t.data() : t.data;
    if (data instanceof Uint8Array) {
      if (data.length !== t.bytes) {
        throw bad(`tensor '${t.name}' (${t.type}, shape [${t.shape.join(', ')}]) needs ${t.bytes} bytes, got ${data.length}`);
      }
      return data;
    }
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (data.length !== n) throw bad(`tensor '${t.name}' has ${n} elements, got ${data.length} values`);
    return encodeTensor(t.type, data);
  }
}

function isStream(d: GgufTensorInput['data']): d is GgufTensorStream {
  return typeof d === 'object' && !Array.isArray(d) && !ArrayBuffer.isView(d) && 'chunks' in d;
}
