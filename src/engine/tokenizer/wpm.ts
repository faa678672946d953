/**
 * WordPiece (tokenizer.ggml.model = "bert"), as llama.cpp's WPM tokenizer encodes, with BERT's
 * normalizer options from the metadata (tokenizer.ggml.normalizer.lowercase, default true;
 * .strip_accents, default = lowercase): accents are stripped by replacing each code point with
 * the first of its canonical decomposition (llama.cpp's NFD table keeps only that one) and
 * dropping every mark (\p{M}); the text is lowercased and split into words at whitespace, and
 * every punctuation mark, ASCII symbol and CJK ideograph is a word of its own; NUL, U+FFFD and
 * control characters vanish. Each word, with the phantom space "▁" before it (the converter's
 * spelling of a word-initial piece; continuations lost vocab.txt's "##"), is cut greedily into
 * the longest pieces in the vocabulary; a word with any position no piece starts at becomes one
 * [UNK].
 */
import { CONTROL, MARK, PUNCTUATION, SYMBOL, WHITESPACE, cptFlags } from './unicode.js';
import type { Vocab } from './vocab.js';

/** CJK ideographs (llama.cpp's is_chinese_char: the ranges BERT's BasicTokenizer splits on). */
function isCjk(c: number): boolean {
  return (
    (c >= 0x4e00 && c <= 0x9fff) ||
    (c >= 0x3400 && c <= 0x4dbf) ||
    (c >= 0x20000 && c <= 0x2a6df) ||
    (c >= 0x2a700 && c <= 0x2b73f) ||
    (c >= 0x2b740 && c <= 0x2b81f) ||
    (c >= 0x2b920 && c <= 0x2ceaf) ||
    (c >= 0xf900 && c <= 0xfaff) ||
    (c >= 0x2f800 && c <= 0x2fa1f)
  );
}

/** One code point lowercased to one code point (llama.cpp's table maps each to exactly one). */
function lower(c: number): string {
  const l = String.fromCodePoint(c).toLowerCase();
  return String.fromCodePoint(l.codePointAt(0)!);
}

/** The first code point of c's canonical decomposition (c itself when it has none). */
function decomposedBase(ch: string): number {
  const c = ch.codePointAt(0)!;
  return c < 0xc0 ? c : ch.normalize('NFD').codePointAt(0)!;
}

export interface WpmNormalizer {
  lowercase: boolean;
  stripAccents: boolean;
}

/** BERT's basic pre-tokenization: the words of `text`, normalized, in order. */
export function wpmWords(text: string, norm: WpmNormalizer): string[] {
  const words: string[] = [];
  let word = '';
  const finish = () => {
    if (word.length > 0) words.push(word);
    word = '';
  };
  for (const ch of text) {
    const c = norm.stripAccents ? decomposedBase(ch) : ch.codePointAt(0)!;
    const flags = cptFlags(c);
    if (flags & WHITESPACE) {
      finish();
      continue;
    }
    if (c === 0 || c === 0xfffd || flags & CONTROL) continue;
    if (norm.stripAccents && flags & MARK) continue;
    const s = norm.lowercase ? lower(c) : String.fromCodePoint(c);
    if (flags & PUNCTUATION || (c < 0x7f && flags & SYMBOL) || isCjk(c)) {
      finish();
      words.push(s);
      continue;
    }
    word += s;
  }
  finish();
  return words;
}

/** Longest piece, in code points, of the vocabulary: the most a greedy match has to try. */
export function longestPiece(vocab: Vocab): number {
  let max = 0;
  for (const t of vocab.tokens) max = Math.max(max, [...t].length);
  return max;
}

/** Appends the ids of `text` (a fragment without special tokens) to `out`. */
export function wpmTokenize(vocab: Vocab, maxPiece: number, text: string, out: number[]): void {
  for (const w of wpmWords(text, vocab)) {
    const cpts = [...('\u2581' + w)];
    const start = out.length;
    for (let i = 0; i < cpts.length; ) {
      let matched = 0;
      for (let j = Math.min(cpts.length, i + maxPiece); j > i; j--) {
        const id = vocab.tokenToId.get(cpts.slice(i, j).join(''));
        if (id !== undefined) {
          out.push(id);
          matched = j - i;
          break;
        }
      }
      if (matched === 0) {
        out.length = start; // no piece starts here: the whole word is unknown
        break;
      }
      i += matched;
    }
    if (out.length === start) out.push(vocab.unk);
  }
}
