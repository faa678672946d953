/**
 * SentencePiece-style merging (llama.cpp's llm_tokenizer_spm): start from single characters,
 * repeatedly merge the adjacent pair whose concatenation is the token with the highest score
 * (ties: the leftmost pair), then emit each symbol as its token, or as byte tokens <0xXX> when
 * it is not in the vocabulary.
 */
import { Heap } from './heap.js';
import { utf8 } from './unicode.js';
import { NO_TOKEN, type Vocab } from './vocab.js';

interface Bigram {
  left: number;
  right: number;
  score: number;
  /** UTF-16 length of the pair when it was queued: a changed symbol makes the entry stale. */
  size: number;
}

const bigramBefore = (a: Bigram, b: Bigram) => a.score > b.score || (a.score === b.score && a.left < b.left);

/** Spaces must already be escaped as "▁" (and the space prefix added) by the caller. */
export function spmTokenize(vocab: Vocab, text: string, out: number[]): void {
  if (text.length === 0) return;
  // Symbols: one per code point, as [start, start + len) UTF-16 ranges in a linked list.
  const cap = text.length;
  const start = new Int32Array(cap);
  const len = new Int32Array(cap);
  const prev = new Int32Array(cap);
  const next = new Int32Array(cap);
  let n = 0;
  for (let i = 0; i < text.length; ) {
    const w = text.codePointAt(i)! > 0xffff ? 2 : 1;
    start[n] = i;
    len[n] = w;
    prev[n] = n - 1;
    i += w;
    next[n] = i === text.length ? -1 : n + 1;
    n++;
  }

  const queue = new Heap<Bigram>(bigramBefore);
  const revMerge = new Map<string, [number, number]>();
  const tryAdd = (left: number, right: number) => {
    if (left === -1 || right === -1) return;
    const size = len[left]! + len[right]!;
    const piece = text.slice(start[left]!, start[left]! + size);
    const id = vocab.tokenToId.get(piece);
    if (id === undefined) return;
    queue.push({ left, right, score: vocab.scores[id]!, size });
    revMerge.set(piece, [left, right]);
  };
  for (let i = 1; i < n; i++) tryAdd(i - 1, i);

  for (let b = queue.pop(); b !== undefined; b = queue.pop()) {
    const { left, right } = b;
    if (len[left] === 0 || len[right] === 0 || len[left]! + len[right]! !== b.size) continue;
    len[left] = len[left]! + len[right]!;
    len[right] = 0;
    next[left] = next[right]!;
    if (next[right]! >= 0) prev[next[right]!] = left;
    tryAdd(prev[left]!, left);
    tryAdd(left, next[left]!);
  }

  const resegment = (sym: number) => {
    const piece = text.slice(start[sym]!, start[sym]! + len[sym]!);
    const id = vocab.tokenToId.get(piece);
    if (id !== undefined) {
      out.push(id);
      return;
    }
    const split = revMerge.get(piece);
    if (split) {
      resegment(split[0]);
      resegment(split[1]);
      return;
    }
    for (const byte of utf8(piece)) out.push(byteToken(vocab, byte));
  };
  for (let i = 0; i !== -1; i = next[i]!) resegment(i);
}

const HEX = '0123456789ABCDEF';

/** The token for a raw byte: "<0xXX>", else the byte as a one-character token, else <unk>. */
export function byteToken(vocab: Vocab, byte: number): number {
  const id = vocab.tokenToId.get(`<0x${HEX[byte >> 4]}${HEX[byte & 15]}>`);
  if (id !== undefined) return id;
  // llama.cpp looks the raw byte up as a string and fails when it is missing; only ASCII can match here.
  const single = byte < 0x80 ? vocab.tokenToId.get(String.fromCharCode(byte)) : undefined;
  return single ?? (vocab.unk !== NO_TOKEN ? vocab.unk : 0);
}
