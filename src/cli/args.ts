/** Parsers for CLI option values: each refuses bad input with an E_BAD_ARGUMENT naming the flag. */
import { EdgeError } from '../errors.js';

export function parsePositiveInt(flag: string, value: string): number {
  if (!/^\d+$/.test(value.trim()) || Number(value) < 1) {
    throw new EdgeError('E_BAD_ARGUMENT', `${flag} takes a positive whole number, got "${value}"`);
  }
  return Number(value);
}

export function parsePositiveNumber(flag: string, value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) {
    throw new EdgeError('E_BAD_ARGUMENT', `${flag} takes a positive number, got "${value}"`);
  }
  return n;
}

/** "1,2,4" -> [1, 2, 4] */
export function parseIntList(flag: string, value: string): number[] {
  return value.split(',').map((part) => parsePositiveInt(flag, part));
}

/** "2048x2048,14336x4096" -> [[2048, 2048], [14336, 4096]] (rows x cols) */
export function parseShapes(flag: string, value: string): Array<[number, number]> {
  return value.split(',').map((part) => {
    const m = /^\s*(\d+)x(\d+)\s*$/.exec(part);
    if (!m) throw new EdgeError('E_BAD_ARGUMENT', `${flag} takes ROWSxCOLS[,ROWSxCOLS...], got "${part}"`);
    const rows = parsePositiveInt(flag, m[1] ?? '');
    const cols = parsePositiveInt(flag, m[2] ?? '');
    if (cols % 32 !== 0) {
      throw new EdgeError('E_BAD_ARGUMENT', `${flag}: cols must be a multiple of 32 (256 for the K-quants and IQ4_XS), got ${cols}`);
    }
    return [rows, cols];
  });
}

/** "1,403,407" -> [1, 403, 407] (token ids: whole numbers >= 0) */
export function parseTokenIds(flag: string, value: string): number[] {
  const parts = value.split(',');
  return parts.map((part) => {
    const p = part.trim();
    if (!/^\d+$/.test(p) || !Number.isSafeInteger(Number(p)) || Number(p) > 2147483647) {
      throw new EdgeError('E_BAD_ARGUMENT', `${flag} takes token ids like 1,403,407, got "${part}"`);
    }
    return Number(p);
  });
}

/** "8G", "16GB", "7.5GiB", "512M" -> bytes (binary units: a "16 GB" Pi has 16 GiB). */
export function parseByteSize(flag: string, value: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(value);
  const n = m ? Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase()) : NaN;
  if (!m || !(n >= 1)) {
    throw new EdgeError('E_BAD_ARGUMENT', `${flag} takes a memory size like 8G, 16GB or 512M, got "${value}"`);
  }
  return Math.round(n);
}
