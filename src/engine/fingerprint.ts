/**
 * A model file's identity, for whatever must never mix up two models (the daemon's answer cache): a
 * hash of the file's size, its whole header (metadata and tensor table: architecture, tokenizer, chat
 * template, shapes and types) and its weights, all of them for files up to 64 MiB, else 256 evenly
 * spaced 16 KiB windows of them (4 MiB read whatever the size, so a multi-GB file costs a fraction of
 * a second). A different fine-tune or quantization of the same architecture has the same header and
 * often the same size; its weights differ nearly everywhere, so the windows tell them apart.
 */
import { createHash } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import { readGgufInfo } from './gguf.js';
import { EdgeError } from '../errors.js';

/** Files with at most this many bytes of weights are hashed whole. */
const WHOLE_DATA_BYTES = 64 * 2 ** 20;
const WINDOWS = 256;
const WINDOW_BYTES = 16 * 2 ** 10;

export interface ModelFingerprint {
  /** "gguf1:<sha256 hex>": equal for byte-identical files, different for different models. */
  id: string;
  /** What the file was when it was hashed: a later stat that differs means it was replaced. */
  file: FileStamp;
}

export interface FileStamp {
  dev: number;
  ino: number;
  size: number;
  mtimeMs: number;
}

export async function fileStamp(path: string): Promise<FileStamp> {
  const s = await stat(path);
  return { dev: s.dev, ino: s.ino, size: s.size, mtimeMs: s.mtimeMs };
}

export const sameFile = (a: FileStamp, b: FileStamp) => a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs;

/**
 * Throws EdgeError (E_MODEL_CORRUPT, ...) as readGgufInfo does for a bad file. `wholeDataBytes` (tests)
 * lowers the size up to which the weights are hashed whole (never below the windows' 4 MiB).
 */
export async function modelFingerprint(path: string, opts: { wholeDataBytes?: number } = {}): Promise<ModelFingerprint> {
  const wholeDataBytes = Math.max(opts.wholeDataBytes ?? WHOLE_DATA_BYTES, WINDOWS * WINDOW_BYTES);
  // First, so a missing, unreadable or corrupt file is the parser's clear E_MODEL_* error.
  const { dataOffset } = readGgufInfo(path);
  const fh = await open(path, 'r').catch((err: NodeJS.ErrnoException) => {
    throw new EdgeError('E_MODEL_NOT_FOUND', `cannot open ${path} (${err.code ?? err.message}): check the path and that this user may read it`, { cause: err });
  });
  try {
    const s = await fh.stat();
    const file = { dev: s.dev, ino: s.ino, size: s.size, mtimeMs: s.mtimeMs };
    const hash = createHash('sha256');
    hash.update(`gguf1 size=${s.size} data=${dataOffset}\n`);
    const readRange = async (from: number, bytes: number) => {
      const buf = Buffer.alloc(Math.min(bytes, 4 * 2 ** 20));
      for (let done = 0; done < bytes; ) {
        const n = Math.min(buf.length, bytes - done);
        const { bytesRead } = await fh.read(buf, 0, n, from + done);
        if (bytesRead === 0) break; // shorter than it was a moment ago: the stamp check will notice
        hash.update(buf.subarray(0, bytesRead));
        done += bytesRead;
      }
    };
    await readRange(0, dataOffset);
    const dataBytes = s.size - dataOffset;
    if (dataBytes <= wholeDataBytes) {
      await readRange(dataOffset, dataBytes);
    } else {
      // Windows at evenly spaced offsets, the last one ending at the end of the file.
      const step = (dataBytes - WINDOW_BYTES) / (WINDOWS - 1);
      for (let w = 0; w < WINDOWS; w++) await readRange(dataOffset + Math.floor(w * step), WINDOW_BYTES);
    }
    return { id: `gguf1:${hash.digest('hex')}`, file };
  } finally {
    await fh.close();
  }
}
