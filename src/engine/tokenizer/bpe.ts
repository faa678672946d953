/**
 * Byte-level BPE (llama.cpp's llm_tokenizer_bpe_session): the text is split into words by the
 * pre-tokenizer, each word's UTF-8 bytes are written as GPT-2 table characters, and the
 * adjacent pair with the lowest merge rank (ties: leftmost) is merged until none is left.
 * Results are cached per word: natural text repeats its words a lot.
 */
import { Heap } from './heap.js';
import { splitWords } from './pretokenize.js';
import { byteEncode } from './unicode.js';
import type { Vocab } from './vocab.js';

interface Bigram {
  left: number;
  right: number;
  rank: number;
  /** The pair's text when queued; a different text now means the entry is stale. */
  text: string;
}

const bigramBefore = (a: Bigram, b: Bigram) => a.rank < b.rank || (a.rank === b.rank && a.left < b.left);

const WORD_CACHE_LIMIT = 1 << 16;

export class BpeEncoder {
  private readonly cache = new Map<string, number[]>();

  constructor(private readonly vocab: Vocab) {}

  encode(text: string, out: number[]): void {
    const pre = this.vocab.pre!;
    for (const word of splitWords(text, pre.regexes)) {
      let ids = this.cache.get(word);
      if (ids === undefined) {
        ids = this.encodeWord(byteEncode(word));
        if (this.cache.size >= WORD_CACHE_LIMIT) this.cache.clear();
        this.cache.set(word, ids);
      }
      for (const id of ids) out.push(id);
    }
  }

  /** `word` is byte-encoded: one character per byte. */
  encodeWord(word: string): number[] {
    const vocab = this.vocab;
    if (vocab.ignoreMerges) {
      const whole = vocab.tokenToId.get(word);
      if (whole !== undefined) return [whole];
    }
    const n = word.length;
    const start = new Int32Array(n);
    const len = new Int32Array(n);
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      start[i] = i;
      len[i] = 1;
      prev[i] = i - 1;
      next[i] = i + 1 === n ? -1 : i + 1;
    }
    const sym = (i: number) => word.slice(start[i]!, start[i]! + len[i]!);
    const queue = new Heap<Bigram>(bigramBefore);
    const tryAdd = (left: number, right: number) => {
      if (left === -1 || right === -1) return;
      const l = sym(left);
      const r = sym(right);
      const rank = vocab.mergeRank(l, r);
      if (rank < 0) return;
      queue.push({ left, right, rank, text: l + r });
    };
    for (let i = 1; i < n; i++) tryAdd(i - 1, i);

    for (let b = queue.pop(); b !== undefined; b = queue.pop()) {
      const { left, right } = b;
      if (len[left] === 0 || len[right] === 0) continue;
      if (sym(left) + sym(right) !== b.text) continue;
      len[left] = len[left]! + len[right]!;
      len[right] = 0;
      next[left] = next[right]!;
      if (next[right]! >= 0) prev[next[right]!] = left;
      tryAdd(prev[left]!, left);
      tryAdd(left, next[left]!);
    }

    const ids: number[] = [];
    for (let i = 0; i !== -1 && n > 0; i = next[i]!) {
      const piece = sym(i);
      const id = vocab.tokenToId.get(piece);
      if (id !== undefined) {
        ids.push(id);
        continue;
      }
      // Not a token (a vocabulary whose merges make pieces it lacks): llama.cpp then looks up each
      // UTF-8 byte of the piece on its own, which only ASCII characters can match.
      for (let j = 0; j < piece.length; j++) {
        const c = piece.charCodeAt(j);
        const single = c < 0x80 ? vocab.tokenToId.get(piece[j]!) : undefined;
        if (single !== undefined) ids.push(single);
      }
    }
    return ids;
  }
}
