/**
 * Text in, token ids out, and back: the tokenizer a model's GGUF metadata describes, encoding
 * exactly as llama.cpp does (SentencePiece-style, byte-level BPE and WordPiece vocabularies).
 */
import { BpeEncoder } from './bpe.js';
import { decodeIds, Pieces, StreamDecoder, type DecodeOptions } from './detokenize.js';
import { partition } from './special.js';
import { spmTokenize } from './spm.js';
import { tiktokenMetadata, type TiktokenSpecials } from './tiktoken.js';
import { Attr, NO_TOKEN, vocabFromMetadata, type Vocab } from './vocab.js';
import { longestPiece, wpmTokenize } from './wpm.js';

export { StreamDecoder, type DecodeOptions } from './detokenize.js';
export { NO_TOKEN, type Vocab } from './vocab.js';
export type { TiktokenSpecials } from './tiktoken.js';

export interface EncodeOptions {
  /** Prepend BOS (default: the model's tokenizer.ggml.add_bos_token, else its family's default). */
  addBos?: boolean;
  /**
   * Append EOS (default: tokenizer.ggml.add_eos_token, usually false); for a WordPiece vocabulary
   * the end marker is [SEP], appended by default.
   */
  addEos?: boolean;
  /** Turn special-token text such as "<s>" or "<|im_start|>" into those tokens (default false). */
  parseSpecial?: boolean;
}

export class Tokenizer {
  readonly vocab: Vocab;
  private readonly pieces: Pieces;
  private readonly bpe: BpeEncoder | null;
  /** WordPiece: the longest piece in code points (how far a greedy match looks). */
  private readonly maxPiece: number;

  private constructor(vocab: Vocab) {
    this.vocab = vocab;
    this.pieces = new Pieces(vocab);
    this.bpe = vocab.model === 'bpe' ? new BpeEncoder(vocab) : null;
    this.maxPiece = vocab.model === 'wpm' ? longestPiece(vocab) : 0;
  }

  /**
   * Builds the tokenizer from GGUF metadata (readGgufInfo(path).metadata). Arrays may be typed
   * arrays or plain arrays. Throws EdgeError E_MODEL_CORRUPT / E_MODEL_UNSUPPORTED.
   */
  static fromMetadata(meta: Record<string, unknown>): Tokenizer {
    return new Tokenizer(vocabFromMetadata(meta));
  }

  /**
   * A byte-level BPE tokenizer from a tiktoken rank file, with the given pre-tokenizer and the
   * family's special tokens (or `specials`).
   */
  static fromTiktoken(path: string, opts: { pre: 'llama-bpe' | 'qwen2'; specials?: TiktokenSpecials }): Tokenizer {
    const meta = tiktokenMetadata(path, opts.pre, opts.specials);
    return new Tokenizer(vocabFromMetadata(meta, { ranksFromTokenIds: true }));
  }

  get size(): number {
    return this.vocab.tokens.length;
  }

  /** Beginning-of-sequence id, or NO_TOKEN (-1). */
  get bos(): number {
    return this.vocab.bos;
  }

  get eos(): number {
    return this.vocab.eos;
  }

  /** End-of-turn id (e.g. <|eot_id|>, <|im_end|>), or NO_TOKEN. */
  get eot(): number {
    return this.vocab.eot;
  }

  /** True for every token that ends generation (EOS, EOT, EOM and the like). */
  isEog(id: number): boolean {
    return id !== NO_TOKEN && this.vocab.eog.has(id);
  }

  /** True for control tokens (BOS, EOS, chat markers), which decode to nothing by default. */
  isControl(id: number): boolean {
    return ((this.vocab.attrs[id] ?? 0) & Attr.CONTROL) !== 0;
  }

  /** The vocabulary's text for a token ("▁Once", "<0x0A>", "Ġthe"...). */
  tokenText(id: number): string {
    const t = this.vocab.tokens[id];
    if (t === undefined) throw new RangeError(`token id ${id} is not in the vocabulary`);
    return t;
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const vocab = this.vocab;
    const addBos = opts.addBos ?? vocab.addBos;
    const addEos = opts.addEos ?? vocab.addEos;
    const out: number[] = [];
    if (addBos && vocab.bos !== NO_TOKEN) out.push(vocab.bos);
    // JS strings may hold lone surrogates; llama.cpp receives them as U+FFFD.
    const fragments = partition(vocab, wellFormed(text), opts.parseSpecial ?? false);
    if (vocab.model === 'spm') {
      let afterSpecial = true; // the text start counts as "after a special token": it gets the space prefix
      for (const f of fragments) {
        if ('id' in f) {
          out.push(f.id);
          afterSpecial = true;
          continue;
        }
        const prefixed = vocab.addSpacePrefix && afterSpecial ? ' ' + f.text : f.text;
        spmTokenize(vocab, prefixed.replaceAll(' ', '\u2581'), out);
        afterSpecial = false;
      }
    } else if (vocab.model === 'wpm') {
      for (const f of fragments) {
        if ('id' in f) out.push(f.id);
        else wpmTokenize(vocab, this.maxPiece, f.text, out);
      }
    } else {
      for (const f of fragments) {
        if ('id' in f) out.push(f.id);
        else this.bpe!.encode(f.text, out);
      }
    }
    const end = vocab.model === 'wpm' ? vocab.sep : vocab.eos;
    if (addEos && end !== NO_TOKEN) out.push(end);
    return out;
  }

  /** llama_detokenize: special tokens vanish unless `unparseSpecial`; see DecodeOptions. */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    return decodeIds(this.vocab, this.pieces, ids, opts);
  }

  /** The bytes a single token stands for (special tokens as their text). */
  pieceBytes(id: number): Uint8Array {
    return this.pieces.bytes(id, true);
  }

  /**
   * A decoder for generated tokens that emits text only when it is complete. With
   * `continuation` the tokens follow a prompt, so the first one keeps its leading space (as
   * llama.cpp's token-to-piece does when generating).
   */
  decoder(opts: { unparseSpecial?: boolean; continuation?: boolean } = {}): StreamDecoder {
    return new StreamDecoder(this.vocab, this.pieces, opts.unparseSpecial ?? false, opts.continuation ?? false);
  }
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

function wellFormed(text: string): string {
  return text.replace(LONE_SURROGATE, '\uFFFD');
}
