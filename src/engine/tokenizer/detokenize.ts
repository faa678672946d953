/**
 * Token ids back to text, as llama.cpp's token_to_piece / llama_detokenize do: byte tokens
 * <0xXX> are raw bytes, SentencePiece's "▁" is a space, byte-level BPE characters map back to
 * their bytes, the space prefix of the first token is dropped (the encoder added it), and
 * BPE vocabularies get llama.cpp's clean-up of spaces before punctuation.
 */
import { EdgeError } from '../../errors.js';
import { charToByte, utf8 } from './unicode.js';
import { Attr, type Vocab } from './vocab.js';

export interface DecodeOptions {
  /** Drop a leading BOS and trailing EOS when the vocabulary adds them (default false). */
  removeSpecial?: boolean;
  /** Render control and unknown tokens as their text, e.g. "<s>" (default false: they vanish). */
  unparseSpecial?: boolean;
}

const EMPTY = new Uint8Array(0);

/** Per-token bytes with special tokens rendered (llama.cpp's token-to-piece cache). */
export class Pieces {
  private readonly cache: Array<Uint8Array | undefined>;

  constructor(private readonly vocab: Vocab) {
    this.cache = new Array<Uint8Array | undefined>(vocab.tokens.length);
  }

  /** The bytes of token `id`; control and unknown tokens are empty unless `special`. */
  bytes(id: number, special: boolean): Uint8Array {
    const vocab = this.vocab;
    if (!Number.isInteger(id) || id < 0 || id >= vocab.tokens.length) {
      throw new EdgeError('E_BAD_ARGUMENT', `token id ${id} is not in the vocabulary (0..${vocab.tokens.length - 1})`);
    }
    if (!special && vocab.attrs[id]! & (Attr.UNKNOWN | Attr.CONTROL)) return EMPTY;
    let piece = this.cache[id];
    if (piece === undefined) {
      piece = this.render(id);
      this.cache[id] = piece;
    }
    return piece;
  }

  private render(id: number): Uint8Array {
    const vocab = this.vocab;
    const text = vocab.tokens[id]!;
    const attr = vocab.attrs[id]!;
    if (attr & (Attr.UNKNOWN | Attr.CONTROL | Attr.USER_DEFINED)) return utf8(text);
    if (attr & Attr.NORMAL) {
      return vocab.model === 'bpe' ? byteDecode(text) : utf8(text.replaceAll('\u2581', ' '));
    }
    if (attr & Attr.BYTE) return Uint8Array.of(parseInt(text.slice(3, 5), 16) & 0xff);
    return EMPTY; // unused and undefined tokens render as nothing
  }
}

/** GPT-2 table characters back to bytes; a character outside the table is rendered as llama.cpp does. */
function byteDecode(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const b = charToByte(ch.codePointAt(0)!);
    if (b >= 0) {
      out.push(b);
    } else {
      const hex = Array.from(utf8(ch), (x) => x.toString(16).padStart(2, '0')).join('');
      out.push(...utf8(`[UNK_BYTE_0x${hex}${text}]`));
    }
  }
  return Uint8Array.from(out);
}

/** Concatenated bytes of `ids`, before the clean-up pass. */
export function detokenizeBytes(vocab: Vocab, pieces: Pieces, ids: readonly number[], opts: DecodeOptions = {}): Uint8Array {
  let from = 0;
  let to = ids.length;
  let stripSpace = vocab.addSpacePrefix;
  if (opts.removeSpecial && vocab.addBos && to > 0 && ids[0] === vocab.bos) {
    stripSpace = false;
    from = 1;
  }
  if (opts.removeSpecial && vocab.addEos && to > from && ids[to - 1] === vocab.eos) to--;
  const parts: Uint8Array[] = [];
  let total = 0;
  for (let i = from; i < to; i++) {
    let p = pieces.bytes(ids[i]!, opts.unparseSpecial ?? false);
    if (stripSpace && p.length > 0 && p[0] === 0x20) p = p.subarray(1);
    stripSpace = false;
    parts.push(p);
    total += p.length;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const SPACE = 0x20;
const APOS = 0x27;

/**
 * llama.cpp's clean_spaces passes over the bytes: " ?" " !" " ." " ," lose the space, " ' "
 * becomes "'", and " 's" " 'm" " 're" " 've" lose the space.
 */
export function cleanSpaces(input: Uint8Array): Uint8Array {
  // Pass 1: a space before ? ! . , goes.
  let src = input;
  let out: number[] = [];
  if (src.length > 0) out.push(src[0]!);
  for (let i = 1; i < src.length; i++) {
    const x = src[i]!;
    if (src[i - 1] === SPACE && (x === 0x3f || x === 0x21 || x === 0x2e || x === 0x2c)) out.pop();
    out.push(x);
  }
  // Pass 2: " ' " -> "'".
  src = Uint8Array.from(out);
  out = [];
  if (src.length > 0) out.push(src[0]!);
  for (let i = 1; i < src.length; i++) {
    const x = src[i]!;
    if (x === APOS && i + 1 < src.length && src[i - 1] === SPACE && src[i + 1] === SPACE) {
      out.pop();
      src[++i] = 0; // llama.cpp overwrites the skipped space with NUL, which later tests see
    }
    out.push(x);
  }
  // Pass 3: " 's" " 'm" " 're" " 've" lose the space (" 't" " 'd" " 'll" keep it).
  src = Uint8Array.from(out);
  out = [];
  if (src.length > 0) out.push(src[0]!);
  for (let i = 1; i < src.length; i++) {
    const x = src[i]!;
    if (src[i - 1] === SPACE && x === APOS && i + 1 < src.length) {
      const x1 = src[i + 1];
      if (x1 === 0x73 || x1 === 0x6d) out.pop(); // s m
      else if (i + 2 < src.length) {
        const x2 = src[i + 2];
        if ((x1 === 0x72 && x2 === 0x65) || (x1 === 0x76 && x2 === 0x65)) out.pop(); // re ve
      }
    }
    out.push(x);
  }
  return Uint8Array.from(out);
}

export function decodeIds(vocab: Vocab, pieces: Pieces, ids: readonly number[], opts: DecodeOptions = {}): string {
  let bytes = detokenizeBytes(vocab, pieces, ids, opts);
  if (vocab.cleanSpaces) bytes = cleanSpaces(bytes);
  return new TextDecoder().decode(bytes);
}

/**
 * Decodes tokens as they are generated. Text comes out only once it is complete: a character
 * split across byte tokens is held until its last byte arrives, and with clean-up on, a space
 * is held until the bytes that decide its fate are known. After `end()`, the concatenated
 * output equals `decode()` of all the ids pushed.
 */
export class StreamDecoder {
  private readonly utf8 = new TextDecoder('utf-8');
  private first = true;
  private held: number[] = [];

  constructor(
    private readonly vocab: Vocab,
    private readonly pieces: Pieces,
    private readonly unparseSpecial = false,
    continuation = false,
  ) {
    // A continuation (generated text after a prompt) keeps the first token's leading space.
    this.first = !continuation;
  }

  /** Adds one token (or several) and returns the text that became final. */
  push(ids: number | readonly number[]): string {
    const list = typeof ids === 'number' ? [ids] : ids;
    let bytes: number[] = [];
    for (const id of list) {
      let p = this.pieces.bytes(id, this.unparseSpecial);
      if (this.first && this.vocab.addSpacePrefix && p.length > 0 && p[0] === SPACE) p = p.subarray(1);
      this.first = false;
      for (const b of p) bytes.push(b);
    }
    if (this.vocab.cleanSpaces) {
      this.held.push(...bytes);
      const cut = safeCut(this.held);
      bytes = Array.from(cleanSpaces(Uint8Array.from(this.held.slice(0, cut))));
      this.held = this.held.slice(cut);
    }
    return this.utf8.decode(Uint8Array.from(bytes), { stream: true });
  }

  /** Flushes what is held; an incomplete character at the very end becomes U+FFFD. */
  end(): string {
    let tail = '';
    if (this.held.length > 0) {
      tail = this.utf8.decode(cleanSpaces(Uint8Array.from(this.held)), { stream: true });
      this.held = [];
    }
    return tail + this.utf8.decode();
  }
}

/**
 * The longest prefix of `b` that clean-up treats the same whatever bytes follow: it must end in
 * two bytes that are neither spaces nor apostrophes (every rule looks at most two bytes past
 * a space or apostrophe, and never removes other bytes).
 */
function safeCut(b: number[]): number {
  for (let i = b.length; i >= 2; i--) {
    const x = b[i - 1]!;
    const y = b[i - 2]!;
    if (x !== SPACE && x !== APOS && y !== SPACE && y !== APOS) return i;
  }
  return 0;
}
