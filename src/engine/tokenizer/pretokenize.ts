/**
 * BPE pre-tokenization: splitting text into words before merges, as llama.cpp's
 * unicode_regex_split does. Each pre-tokenizer is a list of regexes applied in turn, each one
 * splitting the pieces the previous left (text between matches becomes a piece too).
 *
 * Two regexes (GPT-2's and Llama-3's) have hand-written scanners in llama.cpp, reproduced here
 * with the same quirks. Every other regex runs the way llama.cpp's std::regex fallback runs it:
 * on a "collapsed" copy of the text where each non-ASCII code point is replaced by one byte
 * naming its class, with \p{..} in the regex rewritten to match those bytes. That makes, e.g.,
 * Qwen2's `\p{N}` and `\s` agree with llama.cpp (not with JS's own Unicode tables).
 */
import { EdgeError } from '../../errors.js';
import {
  cptFlags,
  codepoints,
  CATEGORY_MASK,
  LETTER,
  MARK,
  NUMBER,
  PUNCTUATION,
  SYMBOL,
  WHITESPACE,
} from './unicode.js';

const CONTRACTIONS_CASED = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";

/** GPT-2's regex without its trailing `|\s+` (llama.cpp's scanner handles that case itself). */
export const REGEX_GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
export const REGEX_LLAMA3 =
  CONTRACTIONS_CASED +
  '|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+';
export const REGEX_QWEN2 =
  CONTRACTIONS_CASED +
  '|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+';
/**
 * DeepSeek LLM (V1, V2): newlines alone, letters of the cased scripts (an explicit code point list,
 * not \p{L}) with an optional leading space, ASCII and full-width punctuation, trailing
 * whitespace, CJK runs, then digit runs. Only the last uses a \p{..} class, so the first five run
 * on the full text (llama.cpp's std::wregex path) and the last on the collapsed one. Written with
 * escapes: several of these code points (U+1FD3, U+2126, U+212A...) change under NFC normalization.
 */
const REGEXES_DEEPSEEK_LLM = [
  '[\r\n]',
  '\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF\u0370-\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+',
  '\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+',
  '\\s+$',
  '[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+',
  '\\p{N}+',
];
/**
 * GPT-4o (Phi-4-mini, Llama 4): words split at case changes (lookaheads on \p{L}), digits in
 * threes; llama.cpp's adaptation of the tokenizer.json regex, run on the collapsed text.
 */
const REGEX_GPT4O =
  '[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:\'[sS]|\'[tT]|\'[rR][eE]|\'[vV][eE]|\'[mM]|\'[lL][lL]|\'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:\'[sS]|\'[tT]|\'[rR][eE]|\'[vV][eE]|\'[mM]|\'[lL][lL]|\'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+';
const REGEX_LLAMA3_ORIGINAL =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** What a `tokenizer.ggml.pre` value means for encoding and decoding. */
export interface PreTokenizer {
  /** The family name used here: 'default', 'gpt-2', 'llama3', 'qwen2', 'dbrx', 'smollm', 'deepseek-llm', 'gpt-4o'. */
  name: string;
  regexes: string[];
  /** A word that is itself a token is emitted whole, without merges (Llama-3). */
  ignoreMerges: boolean;
  /** Detokenization removes spaces before punctuation and some contractions (HF clean_up). */
  cleanSpaces: boolean;
  /** The family forces add_bos (llama.cpp sets it for Llama-3 before reading add_bos_token). */
  addBos?: boolean;
}

const FAMILIES: Array<{ names: string[]; pre: PreTokenizer }> = [
  {
    names: ['default'],
    pre: {
      name: 'default',
      regexes: [
        '[\\p{P}\\$\\+<=>\\^~\\|]+',
        REGEX_GPT2,
        '\\p{N}+',
        '[0-9][0-9][0-9]',
      ],
      ignoreMerges: false,
      cleanSpaces: true,
    },
  },
  {
    names: ['llama3', 'llama-v3', 'llama-bpe', 'falcon3', 'falcon-h1', 'pixtral', 'midm-2.0', 'lfm2'],
    pre: { name: 'llama3', regexes: [REGEX_LLAMA3], ignoreMerges: true, cleanSpaces: true, addBos: true },
  },
  {
    names: ['dbrx', 'smaug-bpe'],
    pre: { name: 'dbrx', regexes: [REGEX_LLAMA3], ignoreMerges: false, cleanSpaces: true },
  },
  {
    names: ['gpt-2', 'phi-2', 'jina-es', 'jina-de', 'gigachat', 'jina-v2-es', 'jina-v2-de', 'mpt', 'olmo'],
    pre: { name: 'gpt-2', regexes: [REGEX_GPT2], ignoreMerges: false, cleanSpaces: true },
  },
  {
    names: ['qwen2', 'deepseek-r1-qwen', 'megrez', 'stablelm2'],
    pre: { name: 'qwen2', regexes: [REGEX_QWEN2], ignoreMerges: false, cleanSpaces: false },
  },
  {
    // SmolLM: every digit is its own word, then GPT-2's split of the rest.
    names: ['smollm'],
    pre: { name: 'smollm', regexes: ['\\p{N}', REGEX_GPT2], ignoreMerges: false, cleanSpaces: false },
  },
  {
    names: ['gpt-4o', 'llama4'],
    pre: { name: 'gpt-4o', regexes: [REGEX_GPT4O], ignoreMerges: false, cleanSpaces: false },
  },
  {
    names: ['deepseek-llm'],
    pre: { name: 'deepseek-llm', regexes: REGEXES_DEEPSEEK_LLM, ignoreMerges: false, cleanSpaces: false },
  },
];

/** The pre-tokenizer for a `tokenizer.ggml.pre` value (missing means llama.cpp's default). */
export function preTokenizerFor(pre: string | undefined): PreTokenizer {
  const key = pre === undefined || pre === '' ? 'default' : pre;
  for (const fam of FAMILIES) {
    if (fam.names.includes(key)) {
      // stablelm2 and megrez share Qwen2's regex but keep clean_spaces on in llama.cpp.
      if (key === 'megrez' || key === 'stablelm2') return { ...fam.pre, cleanSpaces: true };
      return fam.pre;
    }
  }
  // Guessing a split would give other tokens than the model was trained on: refuse instead.
  throw new EdgeError(
    'E_MODEL_UNSUPPORTED',
    `tokenizer.ggml.pre = "${key}" is a pre-tokenizer edgellm does not know (it knows ` +
      FAMILIES.flatMap((f) => f.names).join(', ') +
      '): use a GGUF of a model whose tokenizer.ggml.pre is one of those (`edgellm inspect FILE` shows it)',
  );
}

/**
 * Splits `text` into pre-tokens (JS substrings, in order, covering all of the text) with the
 * regex list, the way llama.cpp's unicode_regex_split does.
 */
export function splitWords(text: string, regexes: readonly string[]): string[] {
  if (text.length === 0) return [];
  const { cpts, offsets } = codepoints(text);
  let pieces: number[] = [cpts.length]; // lengths in code points
  let collapsed: string | undefined;
  for (const re of regexes) {
    if (re === REGEX_GPT2) {
      pieces = splitGpt2(cpts, pieces);
    } else if (re === REGEX_LLAMA3 || re === REGEX_LLAMA3_ORIGINAL) {
      pieces = splitLlama3(cpts, pieces);
    } else {
      const compiled = compileFallback(re);
      if (compiled.collapsed) {
        collapsed ??= collapse(cpts);
        pieces = splitWithRegex(collapsed, compiled.regex, pieces, null);
      } else {
        pieces = splitWithRegex(wideText(cpts), compiled.regex, pieces, cpts);
      }
    }
  }
  const words: string[] = [];
  let start = 0;
  for (const len of pieces) {
    if (len > 0) words.push(text.slice(offsets[start]!, offsets[start + len]!));
    start += len;
  }
  return words;
}

// --- the two hand-written scanners -------------------------------------------------------------

const OUT = -1; // a position outside the current piece

/** One piece of text (code points [ini, end) between special tokens) being split into words. */
interface Piece {
  readonly ini: number;
  readonly end: number;
  /** The code point at p, or OUT outside the piece. */
  cpt(p: number): number;
  /** The code point's category flags at p, or 0 outside the piece. */
  flags(p: number): number;
  /** Ends the current word at `to`; returns its length in code points. */
  emit(to: number): number;
}

/** Runs a hand-written scanner over each piece and collects the word lengths it emits. */
function splitEachPiece(cpts: Uint32Array, pieces: number[], scan: (piece: Piece) => void): number[] {
  const out: number[] = [];
  let start = 0;
  for (const len of pieces) {
    const ini = start;
    const end = start + len;
    start = end;
    let prev = ini;
    scan({
      ini,
      end,
      cpt: (p) => (p >= ini && p < end ? cpts[p]! : OUT),
      flags: (p) => (p >= ini && p < end ? cptFlags(cpts[p]!) : 0),
      emit: (to) => {
        const n = to - prev;
        if (n > 0) out.push(n);
        prev = to;
        return n;
      },
    });
  }
  return out;
}

/**
 * GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * Runs of whitespace before a non-space give all but their last character; that last one joins
 * the next word as its optional leading space.
 */
function splitGpt2(cpts: Uint32Array, pieces: number[]): number[] {
  return splitEachPiece(cpts, pieces, ({ ini, end, cpt, flags, emit }) => {
    for (let pos = ini; pos < end; ) {
      const c = cpt(pos);
      const f = flags(pos);
      if (c === 0x27 /* ' */ && pos + 1 < end) {
        const n1 = cpt(pos + 1);
        if (n1 === 0x73 || n1 === 0x74 || n1 === 0x6d || n1 === 0x64) { // s t m d
          pos += emit(pos + 2);
          continue;
        }
        if (pos + 2 < end) {
          const n2 = cpt(pos + 2);
          if ((n1 === 0x72 && n2 === 0x65) || (n1 === 0x76 && n2 === 0x65) || (n1 === 0x6c && n2 === 0x6c)) {
            pos += emit(pos + 3);
            continue;
          }
        }
      }
      let f2 = c === 0x20 ? flags(pos + 1) : f;
      if (f2 & LETTER) {
        if (c === 0x20) pos++;
        while (f2 & LETTER) f2 = flags(++pos);
        emit(pos);
        continue;
      }
      if (f2 & NUMBER) {
        if (c === 0x20) pos++;
        while (f2 & NUMBER) f2 = flags(++pos);
        emit(pos);
        continue;
      }
      if (!(f2 & (WHITESPACE | LETTER | NUMBER)) && f2 !== 0) {
        if (c === 0x20) pos++;
        while (!(f2 & (WHITESPACE | LETTER | NUMBER)) && f2 !== 0) f2 = flags(++pos);
        emit(pos);
        continue;
      }
      let ws = 0;
      while (flags(pos + ws) & WHITESPACE) ws++;
      if (ws > 1 && cpt(pos + ws) !== OUT) {
        pos += ws - 1;
        emit(pos);
        continue;
      }
      if (ws > 0) {
        pos += ws;
        emit(pos);
        continue;
      }
      emit(++pos);
    }
  });
}

/**
 * Llama-3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *          ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 */
function splitLlama3(cpts: Uint32Array, pieces: number[]): number[] {
  return splitEachPiece(cpts, pieces, ({ ini, end, cpt, flags, emit }) => {
    for (let pos = ini; pos < end; ) {
      const c = cpt(pos);
      const f = flags(pos);
      if (c === 0x27 && pos + 1 < end) {
        const n1 = asciiLower(cpt(pos + 1));
        if (n1 === 0x73 || n1 === 0x74 || n1 === 0x6d || n1 === 0x64) {
          pos += emit(pos + 2);
          continue;
        }
        if (pos + 2 < end) {
          const n2 = asciiLower(cpt(pos + 2));
          if ((n1 === 0x72 && n2 === 0x65) || (n1 === 0x76 && n2 === 0x65) || (n1 === 0x6c && n2 === 0x6c)) {
            pos += emit(pos + 3);
            continue;
          }
        }
      }
      // [^\r\n\p{L}\p{N}]?\p{L}+
      if (!(c === 0x0d || c === 0x0a || f & NUMBER)) {
        if (f & LETTER || flags(pos + 1) & LETTER) {
          pos++;
          while (flags(pos) & LETTER) pos++;
          emit(pos);
          continue;
        }
      }
      // \p{N}{1,3}
      if (f & NUMBER) {
        let run = pos;
        while (flags(pos) & NUMBER) {
          if (++pos - run >= 3) {
            emit(pos);
            run = pos;
          }
        }
        emit(pos);
        continue;
      }
      // <space>?[^\s\p{L}\p{N}]+[\r\n]*  (llama.cpp tests the first character's flags here)
      let f2 = c === 0x20 ? flags(pos + 1) : f;
      if (!(f2 & (WHITESPACE | LETTER | NUMBER)) && f !== 0) {
        if (c === 0x20) pos++;
        while (!(f2 & (WHITESPACE | LETTER | NUMBER)) && f2 !== 0) f2 = flags(++pos);
        let c2 = cpt(pos);
        while (c2 === 0x0d || c2 === 0x0a) c2 = cpt(++pos);
        emit(pos);
        continue;
      }
      let ws = 0;
      let lastNewlineEnd = 0;
      while (flags(pos + ws) & WHITESPACE) {
        const c2 = cpt(pos + ws);
        if (c2 === 0x0d || c2 === 0x0a) lastNewlineEnd = pos + ws + 1;
        ws++;
      }
      // \s*[\r\n]+
      if (lastNewlineEnd > 0) {
        pos = lastNewlineEnd;
        emit(pos);
        continue;
      }
      // \s+(?!\S)
      if (ws > 1 && cpt(pos + ws) !== OUT) {
        pos += ws - 1;
        emit(pos);
        continue;
      }
      if (ws > 0) {
        pos += ws;
        emit(pos);
        continue;
      }
      emit(++pos);
    }
  });
}

function asciiLower(c: number): number {
  return c >= 0x41 && c <= 0x5a ? c + 0x20 : c;
}

// --- the std::regex fallback ---------------------------------------------------------------------

// The byte each class collapses to, and the ASCII members each \p{..} keeps (llama.cpp's tables).
const COLLAPSE_BYTE: Record<number, number> = {
  [NUMBER]: 0xd1,
  [LETTER]: 0xd2,
  [PUNCTUATION]: 0xd3,
  [MARK]: 0xd4,
  [SYMBOL]: 0xd5,
};
const COLLAPSE_OTHER = 0xd0;
const COLLAPSE_WHITESPACE = 0x0b; // std::regex's \s matches only ASCII whitespace
const CATEGORY_CLASSES: Record<string, { byte: number; ascii: string }> = {
  '\\p{N}': { byte: 0xd1, ascii: '0-9' },
  '\\p{L}': { byte: 0xd2, ascii: 'A-Za-z' },
  '\\p{P}': { byte: 0xd3, ascii: '!-#%-*,-/:-;?-@\\[-\\]_\\{\\}' },
  '\\p{M}': { byte: 0xd4, ascii: '' },
  '\\p{S}': { byte: 0xd5, ascii: '\\$\\+<->\\^`\\|' },
  '\\p{Lu}': { byte: 0xd2, ascii: 'A-Za-z' },
  '\\p{Ll}': { byte: 0xd2, ascii: 'A-Za-z' },
  '\\p{Lt}': { byte: 0xd2, ascii: 'A-Za-z' },
  '\\p{Lm}': { byte: 0xd2, ascii: 'A-Za-z' },
  '\\p{Lo}': { byte: 0xd2, ascii: 'A-Za-z' },
};

function collapse(cpts: Uint32Array): string {
  const chars: number[] = new Array<number>(cpts.length);
  for (let i = 0; i < cpts.length; i++) {
    const c = cpts[i]!;
    if (c < 128) {
      chars[i] = c;
      continue;
    }
    const f = cptFlags(c);
    if (f & WHITESPACE) chars[i] = COLLAPSE_WHITESPACE;
    else chars[i] = COLLAPSE_BYTE[f & CATEGORY_MASK] ?? COLLAPSE_OTHER;
  }
  let s = '';
  for (let i = 0; i < chars.length; i += 8192) s += String.fromCharCode(...chars.slice(i, i + 8192));
  return s;
}

/** Text for a category-free regex: non-ASCII whitespace becomes \v, as llama.cpp does for std::wregex. */
function wideText(cpts: Uint32Array): string {
  let s = '';
  for (let i = 0; i < cpts.length; i++) {
    const c = cpts[i]!;
    s += c > 0x7f && cptFlags(c) & WHITESPACE ? '\v' : String.fromCodePoint(c);
  }
  return s;
}

const compiledCache = new Map<string, { regex: RegExp; collapsed: boolean }>();

function compileFallback(re: string): { regex: RegExp; collapsed: boolean } {
  const hit = compiledCache.get(re);
  if (hit) return hit;
  const usesCategories = Object.keys(CATEGORY_CLASSES).some((k) => re.includes(k));
  let result: { regex: RegExp; collapsed: boolean };
  if (usesCategories) {
    let src = '';
    let inside = false;
    for (let i = 0; i < re.length; i++) {
      const ch = re[i]!;
      if (ch === '[' && (i === 0 || re[i - 1] !== '\\')) {
        src += '[';
        inside = true;
        continue;
      }
      if (inside && ch === ']' && re[i - 1] !== '\\') {
        src += ']';
        inside = false;
        continue;
      }
      if (ch === '\\' && re[i + 1] === 'p' && re[i + 2] === '{') {
        const close = re.indexOf('}', i + 3);
        const cls = close >= 0 ? CATEGORY_CLASSES[re.slice(i, close + 1)] : undefined;
        if (cls) {
          const body = String.fromCharCode(cls.byte) + cls.ascii;
          src += inside ? body : `[${body}]`;
          i = close;
          continue;
        }
      }
      src += ch;
    }
    result = { regex: new RegExp(src, 'g'), collapsed: true };
  } else {
    result = { regex: new RegExp(re, 'gu'), collapsed: false };
  }
  compiledCache.set(re, result);
  return result;
}

/**
 * Splits each piece by the regex's matches (std::regex_iterator over the piece): matches and the
 * text between them become pieces. `text` has one UTF-16 unit per code point when `cpts` is null;
 * otherwise it is the full-Unicode text and match indexes are mapped back to code points.
 */
function splitWithRegex(text: string, regex: RegExp, pieces: number[], cpts: Uint32Array | null): number[] {
  const out: number[] = [];
  let start = 0; // code points
  let unitStart = 0; // UTF-16 units (differs from `start` only for astral code points)
  for (const len of pieces) {
    let units = len;
    if (cpts) {
      units = 0;
      for (let i = start; i < start + len; i++) units += cpts[i]! > 0xffff ? 2 : 1;
    }
    const sub = text.slice(unitStart, unitStart + units);
    const toCpt = cpts ? unitToCodepointIndex(sub) : null;
    regex.lastIndex = 0;
    let done = 0;
    for (let m = regex.exec(sub); m !== null; m = regex.exec(sub)) {
      const from = toCpt ? toCpt[m.index]! : m.index;
      const to = toCpt ? toCpt[m.index + m[0].length]! : m.index + m[0].length;
      if (from > done) out.push(from - done);
      if (to > from) out.push(to - from);
      done = to;
      if (m[0].length === 0) regex.lastIndex++;
    }
    if (done < len) out.push(len - done);
    start += len;
    unitStart += units;
  }
  return out;
}

function unitToCodepointIndex(s: string): Uint32Array {
  const map = new Uint32Array(s.length + 1);
  let cp = 0;
  for (let i = 0; i < s.length; ) {
    const c = s.codePointAt(i)!;
    const w = c > 0xffff ? 2 : 1;
    map[i] = cp;
    if (w === 2) map[i + 1] = cp;
    i += w;
    cp++;
  }
  map[s.length] = cp;
  return map;
}
