/**
 * The vocabulary as llama.cpp's llama_vocab::load builds it from GGUF metadata: token texts,
 * scores and attributes, merge ranks, special ids and the flags that steer encoding and
 * decoding (add_bos, add_space_prefix, clean_spaces...), including llama.cpp's fix-ups by
 * token text (EOT/EOG detection, Phi-3's rstrip).
 */
import { EdgeError } from '../../errors.js';
import { preTokenizerFor, type PreTokenizer } from './pretokenize.js';

/** llama.cpp's llama_token_attr bits. */
export const Attr = {
  UNDEFINED: 0,
  UNKNOWN: 1 << 0,
  UNUSED: 1 << 1,
  NORMAL: 1 << 2,
  CONTROL: 1 << 3,
  USER_DEFINED: 1 << 4,
  BYTE: 1 << 5,
  NORMALIZED: 1 << 6,
  LSTRIP: 1 << 7,
  RSTRIP: 1 << 8,
  SINGLE_WORD: 1 << 9,
} as const;

/** GGUF tokenizer.ggml.token_type values -> attributes. */
const TYPE_TO_ATTR: Record<number, number> = {
  0: Attr.UNDEFINED,
  1: Attr.NORMAL,
  2: Attr.UNKNOWN,
  3: Attr.CONTROL,
  4: Attr.USER_DEFINED,
  5: Attr.UNUSED,
  6: Attr.BYTE,
};

/** A token id that is not set (llama.cpp's LLAMA_TOKEN_NULL). */
export const NO_TOKEN = -1;

export interface Vocab {
  /**
   * 'spm': SentencePiece-style score merges ("llama"); 'bpe': byte-level rank merges ("gpt2");
   * 'wpm': WordPiece, greedy longest pieces ("bert").
   */
  model: 'spm' | 'bpe' | 'wpm';
  /** BPE only: how text is split into words before merging. */
  pre: PreTokenizer | null;
  tokens: string[];
  scores: Float32Array;
  attrs: Uint16Array;
  tokenToId: Map<string, number>;
  /** BPE merge rank of the pair, or -1. */
  mergeRank(left: string, right: string): number;
  bos: number;
  eos: number;
  eot: number;
  eom: number;
  unk: number;
  pad: number;
  /** WordPiece's [SEP], which ends every encoded input (NO_TOKEN for the other models). */
  sep: number;
  /** WordPiece's BERT normalizer: lowercase the text, strip accents (both default true). */
  lowercase: boolean;
  stripAccents: boolean;
  eog: Set<number>;
  addBos: boolean;
  addEos: boolean;
  addSpacePrefix: boolean;
  cleanSpaces: boolean;
  ignoreMerges: boolean;
  /** Tokens split out of the text before tokenizing (control, user-defined, unknown), longest first. */
  specialTokens: number[];
  chatTemplate: string | undefined;
}

type Meta = Record<string, unknown>;

/** Extra inputs for vocabularies that do not come from GGUF merges (tiktoken rank files). */
export interface VocabBuildOptions {
  /** Rank of a pair = rank (id) of the merged token, as tiktoken does; no merges list needed. */
  ranksFromTokenIds?: boolean;
}

export function vocabFromMetadata(meta: Meta, opts: VocabBuildOptions = {}): Vocab {
  const model = str(meta, 'tokenizer.ggml.model');
  if (model === undefined) throw corrupt('tokenizer.ggml.model is missing: the file has no tokenizer');
  let kind: 'spm' | 'bpe' | 'wpm';
  if (model === 'llama') kind = 'spm';
  else if (model === 'gpt2') kind = 'bpe';
  else if (model === 'bert') kind = 'wpm';
  else {
    throw new EdgeError(
      'E_MODEL_UNSUPPORTED',
      `tokenizer.ggml.model = "${model}" is a tokenizer edgellm does not run: it runs "llama" (SentencePiece), "gpt2" (BPE) and "bert" (WordPiece) vocabularies; use a GGUF of a model with one of those`,
    );
  }
  const preName = str(meta, 'tokenizer.ggml.pre');

  const tokensRaw = meta['tokenizer.ggml.tokens'];
  if (!Array.isArray(tokensRaw) || tokensRaw.some((t) => typeof t !== 'string')) {
    throw corrupt('tokenizer.ggml.tokens must be an array of strings');
  }
  const n = tokensRaw.length;
  const scores = new Float32Array(n);
  const scoresRaw = meta['tokenizer.ggml.scores'];
  if (scoresRaw !== undefined) {
    const s = numbers(scoresRaw, 'tokenizer.ggml.scores');
    if (s.length < n) throw corrupt(`tokenizer.ggml.scores has ${s.length} entries for ${n} tokens`);
    for (let i = 0; i < n; i++) scores[i] = s[i]!;
  }
  const attrs = new Uint16Array(n).fill(Attr.NORMAL);
  const typesRaw = meta['tokenizer.ggml.token_type'];
  if (typesRaw !== undefined) {
    const t = numbers(typesRaw, 'tokenizer.ggml.token_type');
    if (t.length < n) throw corrupt(`tokenizer.ggml.token_type has ${t.length} entries for ${n} tokens`);
    for (let i = 0; i < n; i++) attrs[i] = TYPE_TO_ATTR[t[i]!] ?? Attr.UNDEFINED;
  }

  const tokens: string[] = new Array<string>(n);
  const tokenToId = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    let word = tokensRaw[i] as string;
    if (word === '') word = `[EMPTY_${i}]`;
    const prev = tokenToId.get(word);
    if (prev !== undefined) {
      throw corrupt(`duplicate token in tokenizer.ggml.tokens: ${JSON.stringify(word)} has ids ${prev} and ${i}`);
    }
    tokenToId.set(word, i);
    tokens[i] = word;
  }

  let mergeRank: (l: string, r: string) => number = () => -1;
  if (kind === 'bpe') {
    if (opts.ranksFromTokenIds) {
      mergeRank = (l, r) => tokenToId.get(l + r) ?? -1;
    } else {
      const mergesRaw = meta['tokenizer.ggml.merges'];
      if (!Array.isArray(mergesRaw)) throw corrupt('tokenizer.ggml.merges is missing: a gpt2 (BPE) vocabulary needs it');
      const ranks = new Map<string, number>();
      for (let i = 0; i < mergesRaw.length; i++) {
        const m = mergesRaw[i];
        if (typeof m !== 'string') throw corrupt('tokenizer.ggml.merges must be an array of strings');
        const pos = m.indexOf(' ', 1);
        // Symbols never hold a space (byte-level BPE writes it as Ġ), so "left right" is a unique key.
        const key = pos < 0 ? ' ' : m;
        if (!ranks.has(key)) ranks.set(key, i);
      }
      mergeRank = (l, r) => ranks.get(l + ' ' + r) ?? -1;
    }
  }

  // Defaults by model (llama.cpp's; BERT's vocab.txt ids for WordPiece: [CLS] 101 is its BOS, no
  // EOS, [SEP] 102 closes every input), then the pre-tokenizer family, then the file's own keys.
  const wpm = kind === 'wpm';
  let bos = kind === 'spm' ? 1 : wpm ? 101 : 11;
  let eos = kind === 'spm' ? 2 : wpm ? NO_TOKEN : 11;
  let unk = kind === 'spm' ? 0 : wpm ? 100 : NO_TOKEN;
  let eot = NO_TOKEN;
  let eom = NO_TOKEN;
  let pad = wpm ? 0 : NO_TOKEN;
  let sep = wpm ? 102 : NO_TOKEN;
  let addBos = kind === 'spm' || wpm;
  let addEos = wpm; // WordPiece: "append the end marker" is [SEP]
  let addSpacePrefix = kind === 'spm';
  let pre: PreTokenizer | null = null;
  let cleanSpaces = false;
  let ignoreMerges = false;
  if (kind === 'bpe') {
    pre = preTokenizerFor(preName);
    cleanSpaces = pre.cleanSpaces;
    ignoreMerges = pre.ignoreMerges;
    if (pre.addBos) addBos = true;
  }
  addSpacePrefix = bool(meta, 'tokenizer.ggml.add_space_prefix') ?? addSpacePrefix;
  const lowercase = bool(meta, 'tokenizer.ggml.normalizer.lowercase') ?? true;
  const stripAccents = bool(meta, 'tokenizer.ggml.normalizer.strip_accents') ?? lowercase;

  const inRange = (id: number) => (id >= 0 && id < n ? id : NO_TOKEN);
  bos = inRange(bos);
  eos = inRange(eos);
  unk = inRange(unk);
  pad = inRange(pad);
  sep = inRange(sep);
  const readId = (key: string, fallback: number): number => {
    const v = num(meta, key);
    if (v === undefined) return fallback;
    return v >= 0 && v < n ? v : fallback; // out of range (e.g. 0xFFFFFFFF): keep the default
  };
  if (wpm) bos = readId('tokenizer.ggml.cls_token_id', bos); // older converters name BERT's BOS so
  bos = readId('tokenizer.ggml.bos_token_id', bos);
  sep = readId('tokenizer.ggml.seperator_token_id', sep); // sic: llama.cpp's key
  eos = readId('tokenizer.ggml.eos_token_id', eos);
  eot = readId('tokenizer.ggml.eot_token_id', eot);
  eom = readId('tokenizer.ggml.eom_token_id', eom);
  unk = readId('tokenizer.ggml.unknown_token_id', unk);
  pad = readId('tokenizer.ggml.padding_token_id', pad);
  let fimPad = readId('tokenizer.ggml.fim_pad_token_id', NO_TOKEN);
  let fimRep = readId('tokenizer.ggml.fim_rep_token_id', NO_TOKEN);
  let fimSep = readId('tokenizer.ggml.fim_sep_token_id', NO_TOKEN);
  addBos = bool(meta, 'tokenizer.ggml.add_bos_token') ?? addBos;
  addEos = bool(meta, 'tokenizer.ggml.add_eos_token') ?? addEos;
  if (addBos && bos === NO_TOKEN) {
    throw corrupt(wpm ? 'a WordPiece vocabulary needs its [CLS] token (tokenizer.ggml.bos_token_id)' : 'tokenizer.ggml.add_bos_token is true, but there is no BOS token');
  }
  if (addEos && (wpm ? sep : eos) === NO_TOKEN) {
    throw corrupt(wpm ? 'a WordPiece vocabulary needs its [SEP] token (tokenizer.ggml.seperator_token_id)' : 'tokenizer.ggml.add_eos_token is true, but there is no EOS token');
  }
  if (wpm && unk === NO_TOKEN) throw corrupt('a WordPiece vocabulary needs its [UNK] token (tokenizer.ggml.unknown_token_id)');

  // Tokens that look like control tokens are made control tokens, as llama.cpp does.
  const markControl = (id: number) => {
    attrs[id] = attrs[id]! | Attr.CONTROL;
  };
  const find = (texts: readonly string[]): number => {
    for (const t of texts) {
      const id = tokenToId.get(t);
      if (id !== undefined) return id;
    }
    return NO_TOKEN;
  };
  if (eot === NO_TOKEN) {
    eot = find(EOT_TEXTS);
    if (eot !== NO_TOKEN) markControl(eot);
  }
  if (eom === NO_TOKEN) {
    eom = find(['<|eom_id|>']);
    if (eom !== NO_TOKEN) markControl(eom);
  }
  for (const texts of FIM_TEXTS) {
    const id = find(texts);
    if (id !== NO_TOKEN) markControl(id);
  }
  if (fimPad === NO_TOKEN) fimPad = find(FIM_PAD_TEXTS);
  if (fimRep === NO_TOKEN) fimRep = find(FIM_REP_TEXTS);
  if (fimSep === NO_TOKEN) fimSep = find(['<|file_sep|>']);
  for (const id of [fimPad, fimRep, fimSep]) if (id !== NO_TOKEN) markControl(id);

  const eog = new Set<number>();
  for (const id of [fimPad, fimRep, fimSep]) if (id !== NO_TOKEN) eog.add(id);
  for (const t of EOG_TEXTS) {
    const id = tokenToId.get(t);
    if (id === undefined) continue;
    eog.add(id);
    markControl(id);
  }
  for (const t of ['<|channel|>', '<|message|>', '<|start|>', '<|constrain|>']) {
    const id = tokenToId.get(t);
    if (id !== undefined) attrs[id] = Attr.USER_DEFINED;
  }
  for (const id of [eos, eot, eom]) if (id !== NO_TOKEN) eog.add(id);
  // gpt-oss style vocabularies: <|end|> is not the end of generation when <|return|>/<|call|> exist.
  const endId = tokenToId.get('<|end|>');
  if (endId !== undefined && eog.has(endId)) {
    const has = (t: string) => {
      const id = tokenToId.get(t);
      return id !== undefined && eog.has(id);
    };
    if ((has('<|return|>') && (has('<|call|>') || has('<|calls|>'))) || (has('<|calls|>') && has('<|flush|>'))) {
      eog.delete(endId);
      attrs[endId] = Attr.USER_DEFINED;
    }
  }

  // Gemma-4 style vocabularies: </s> is an ordinary token there.
  const sId = tokenToId.get('</s>');
  const toolResponse = tokenToId.get('<|tool_response>');
  if (sId !== undefined && eog.has(sId) && toolResponse !== undefined && eog.has(toolResponse)) {
    eog.delete(sId);
    attrs[sId] = Attr.NORMAL;
  }

  const specialTokens: number[] = [];
  for (let i = 0; i < n; i++) {
    if (attrs[i]! & (Attr.CONTROL | Attr.USER_DEFINED | Attr.UNKNOWN)) specialTokens.push(i);
  }
  // Longest first; equal lengths keep id order (llama.cpp's std::sort leaves their order unspecified).
  specialTokens.sort((a, b) => tokens[b]!.length - tokens[a]!.length || a - b);

  // Per-model attributes llama.cpp sets by name (Phi-3: special tokens eat the whitespace after them).
  const name = (str(meta, 'general.name') ?? '').toLowerCase();
  if (name.includes('phi-3') || name.includes('phi3')) {
    for (const id of specialTokens) attrs[id] = attrs[id]! | Attr.RSTRIP;
    const set = (t: string, on: boolean) => {
      const id = tokenToId.get(t);
      if (id !== undefined) attrs[id] = on ? attrs[id]! | Attr.RSTRIP : attrs[id]! & ~Attr.RSTRIP;
    };
    set('</s>', true);
    for (const t of ['<unk>', '<s>', '<|endoftext|>']) set(t, false);
  }

  return {
    model: kind,
    pre,
    tokens,
    scores,
    attrs,
    tokenToId,
    mergeRank,
    bos,
    eos,
    eot,
    eom,
    unk,
    pad,
    sep,
    lowercase,
    stripAccents,
    eog,
    addBos,
    addEos,
    addSpacePrefix,
    cleanSpaces,
    ignoreMerges,
    specialTokens,
    chatTemplate: str(meta, 'tokenizer.chat_template'),
  };
}

const EOT_TEXTS = [
  '<|eot_id|>', '<|im_end|>', '<|end|>', '<end_of_turn>', '<|endoftext|>', '<|end_of_text|>', '<EOT>', '_<EOT>',
  '[EOT]', '<｜end▁of▁sentence｜>', '<end_of_utterance>',
];
const EOG_TEXTS = [
  '<|eot_id|>', '<|im_end|>', '<|end|>', '<|return|>', '<|call|>', '<|flush|>', '<|calls|>', '<end_of_turn>',
  '<|endoftext|>', '</s>', '<|eom_id|>', '<EOT>', '_<EOT>', '[EOT]', '[EOS]', '<|end_of_text|>',
  '<end_of_utterance>', '<eos>', '<turn|>', '<|tool_response>', '<｜end▁of▁sentence｜>', '[e~[',
];
const FIM_TEXTS = [
  ['<|fim_prefix|>', '<fim-prefix>', '<fim_prefix>', '<｜fim▁begin｜>', '<PRE>', '▁<PRE>', '<|code_prefix|>'],
  ['<|fim_suffix|>', '<fim-suffix>', '<fim_suffix>', '<｜fim▁hole｜>', '<SUF>', '▁<SUF>', '<|code_suffix|>'],
  ['<|fim_middle|>', '<fim-middle>', '<fim_middle>', '<｜fim▁end｜>', '<MID>', '▁<MID>', '<|code_middle|>'],
];
const FIM_PAD_TEXTS = ['<|fim_pad|>', '<fim-pad>', '<fim_pad>', '<PAD>', '[PAD]'];
const FIM_REP_TEXTS = ['<|fim_repo|>', '<|repo_name|>', '<fim-repo>', '<REPO>', '<reponame>'];

function corrupt(msg: string): EdgeError {
  return new EdgeError('E_MODEL_CORRUPT', msg);
}

function str(meta: Meta, key: string): string | undefined {
  const v = meta[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw corrupt(`${key} must be a string`);
  return v;
}

function bool(meta: Meta, key: string): boolean | undefined {
  const v = meta[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw corrupt(`${key} must be a boolean`);
  return v;
}

function num(meta: Meta, key: string): number | undefined {
  const v = meta[key];
  if (v === undefined) return undefined;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v !== 'number' || !Number.isInteger(v)) throw corrupt(`${key} must be an integer`);
  return v;
}

/** Float32Array, Int32Array, any typed array or number[] -> indexable numbers. */
function numbers(v: unknown, key: string): ArrayLike<number> {
  if (ArrayBuffer.isView(v) && !(v instanceof DataView) && !(v instanceof BigInt64Array) && !(v instanceof BigUint64Array)) {
    return v as unknown as ArrayLike<number>;
  }
  if (Array.isArray(v) && v.every((x) => typeof x === 'number')) return v as number[];
  throw corrupt(`${key} must be an array of numbers`);
}
