/**
 * Code point classes as llama.cpp's unicode.cpp sees them (the flags its pre-tokenizers test),
 * UTF-8 helpers, and GPT-2's byte <-> printable-character table used by byte-level BPE.
 */

// Flag bits, one general category per code point plus a whitespace bit (llama.cpp's layout).
export const UNDEFINED = 0x0001; // Cn: unassigned
export const NUMBER = 0x0002; // \p{N}
export const LETTER = 0x0004; // \p{L}
export const SEPARATOR = 0x0008; // \p{Z}
export const MARK = 0x0010; // \p{M}
export const PUNCTUATION = 0x0020; // \p{P}
export const SYMBOL = 0x0040; // \p{S}
export const CONTROL = 0x0080; // \p{C} other than Cn
export const CATEGORY_MASK = 0x00ff;
export const WHITESPACE = 0x0100;

/**
 * llama.cpp's whitespace set (Unicode White_Space). Not JS's \s: that one lacks U+0085 and has
 * U+FEFF.
 */
const WHITESPACE_CPTS = [
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005,
  0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
];

const MAX_CODEPOINT = 0x110000;
/** Lazily filled: 0 = not computed yet (every real code point has a category bit). */
const flagCache = new Uint16Array(MAX_CODEPOINT);
const whitespaceSet = new Set(WHITESPACE_CPTS);

const RE_L = /\p{L}/u;
const RE_N = /\p{N}/u;
const RE_P = /\p{P}/u;
const RE_M = /\p{M}/u;
const RE_S = /\p{S}/u;
const RE_Z = /\p{Z}/u;
const RE_CN = /\p{Cn}/u;

function computeFlags(cpt: number): number {
  // Surrogate code points never reach here from well-formed text; class them as control.
  const ch = String.fromCodePoint(cpt);
  let f: number;
  if (RE_L.test(ch)) f = LETTER;
  else if (RE_N.test(ch)) f = NUMBER;
  else if (RE_P.test(ch)) f = PUNCTUATION;
  else if (RE_M.test(ch)) f = MARK;
  else if (RE_S.test(ch)) f = SYMBOL;
  else if (RE_Z.test(ch)) f = SEPARATOR;
  else if (RE_CN.test(ch)) f = UNDEFINED;
  else f = CONTROL;
  if (whitespaceSet.has(cpt)) f |= WHITESPACE;
  return f;
}

export function cptFlags(cpt: number): number {
  if (cpt >= MAX_CODEPOINT || cpt < 0) return UNDEFINED;
  let f = flagCache[cpt]!;
  if (f === 0) {
    f = computeFlags(cpt);
    flagCache[cpt] = f;
  }
  return f;
}

/** Code points of a JS string, and where each starts in UTF-16 units (length n + 1). */
export function codepoints(text: string): { cpts: Uint32Array; offsets: Uint32Array } {
  const cpts = new Uint32Array(text.length);
  const offsets = new Uint32Array(text.length + 1);
  let n = 0;
  for (let i = 0; i < text.length; ) {
    const c = text.codePointAt(i)!;
    cpts[n] = c;
    offsets[n] = i;
    n++;
    i += c > 0xffff ? 2 : 1;
  }
  offsets[n] = text.length;
  return { cpts: cpts.subarray(0, n), offsets: offsets.subarray(0, n + 1) };
}

const utf8Encoder = new TextEncoder();
export function utf8(text: string): Uint8Array {
  return utf8Encoder.encode(text);
}

/** UTF-8 sequence length from its first byte, as llama.cpp's unicode_len_utf8 (continuation bytes: 1). */
export function utf8LenFromLead(byte: number): number {
  const hi = byte >> 4;
  if (hi < 0xc) return 1;
  if (hi < 0xe) return 2;
  if (hi === 0xe) return 3;
  return 4;
}

// GPT-2's reversible byte <-> character table: printable Latin-1 bytes map to themselves, the
// other 68 bytes to U+0100.. in byte order.
const BYTE_TO_CHAR: string[] = new Array<string>(256);
const CHAR_TO_BYTE = new Map<number, number>();
{
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    const cpt = printable ? b : 256 + n++;
    BYTE_TO_CHAR[b] = String.fromCharCode(cpt);
    CHAR_TO_BYTE.set(cpt, b);
  }
}

export function byteToChar(b: number): string {
  return BYTE_TO_CHAR[b]!;
}

/** The byte a GPT-2 table character stands for, or -1 when it is not in the table. */
export function charToByte(cpt: number): number {
  return CHAR_TO_BYTE.get(cpt) ?? -1;
}

/** UTF-8 bytes of `text`, each written as its GPT-2 table character. */
export function byteEncode(text: string): string {
  const bytes = utf8(text);
  let out = '';
  for (let i = 0; i < bytes.length; i++) out += BYTE_TO_CHAR[bytes[i]!];
  return out;
}
