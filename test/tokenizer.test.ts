// The tokenizer's rules on small hand-made vocabularies (no model files needed): SentencePiece
// merges by score, byte fallback, BPE merges by rank, the pre-tokenizer splits, special-token
// splitting, decoding, the streaming decoder and how bad metadata is refused.
import t from 'tap';
import { EdgeError } from '../src/errors.js';
import { Tokenizer } from '../src/engine/tokenizer/index.js';
import { cleanSpaces } from '../src/engine/tokenizer/detokenize.js';
import { preTokenizerFor, splitWords } from '../src/engine/tokenizer/pretokenize.js';
import { byteToChar } from '../src/engine/tokenizer/unicode.js';

const NORMAL = 1;
const UNKNOWN = 2;
const CONTROL = 3;
const USER_DEFINED = 4;
const BYTE = 6;

/** A SentencePiece vocabulary: <unk> <s> </s>, the 256 byte tokens, then `pieces` [text, score, type?]. */
function spm(pieces: Array<[string, number, number?]>, extra: Record<string, unknown> = {}): Tokenizer {
  const tokens = ['<unk>', '<s>', '</s>'];
  const scores = [0, 0, 0];
  const types = [UNKNOWN, CONTROL, CONTROL];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    scores.push(0);
    types.push(BYTE);
  }
  for (const [text, score, type] of pieces) {
    tokens.push(text);
    scores.push(score);
    types.push(type ?? NORMAL);
  }
  return Tokenizer.fromMetadata({
    'tokenizer.ggml.model': 'llama',
    'tokenizer.ggml.tokens': tokens,
    'tokenizer.ggml.scores': new Float32Array(scores),
    'tokenizer.ggml.token_type': new Int32Array(types),
    ...extra,
  });
}

/** A byte-level BPE vocabulary: the 256 byte characters, then merged tokens in merge order. */
function bpe(merges: string[], extra: Record<string, unknown> = {}, specials: string[] = []): Tokenizer {
  const tokens: string[] = [];
  for (let b = 0; b < 256; b++) tokens.push(byteToChar(b));
  for (const m of merges) tokens.push(m.replace(' ', ''));
  const types = tokens.map(() => NORMAL);
  for (const s of specials) {
    tokens.push(s);
    types.push(CONTROL);
  }
  return Tokenizer.fromMetadata({
    'tokenizer.ggml.model': 'gpt2',
    'tokenizer.ggml.pre': 'gpt-2',
    'tokenizer.ggml.tokens': tokens,
    'tokenizer.ggml.token_type': types,
    'tokenizer.ggml.merges': merges,
    ...extra,
  });
}

const id = (tk: Tokenizer, text: string) => tk.vocab.tokenToId.get(text)!;
const byte = (b: number) => 3 + b;

t.test('SPM merges the highest-scoring pair first', async (t) => {
  const tk = spm([['▁', -1], ['a', -1], ['b', -1], ['c', -1], ['ab', -5], ['bc', -2], ['▁a', -3]]);
  // "▁abc": bc (-2) beats ▁a (-3) beats ab (-5).
  t.same(tk.encode('abc', { addBos: false }), [id(tk, '▁a'), id(tk, 'bc')]);
});

t.test('SPM breaks score ties by taking the leftmost pair', async (t) => {
  const tk = spm([['▁', -1], ['a', -1], ['aa', -2]]);
  t.same(tk.encode('aaa', { addBos: false }), [id(tk, '▁'), id(tk, 'aa'), id(tk, 'a')]);
});

t.test('SPM writes characters it has no token for as UTF-8 byte tokens', async (t) => {
  const tk = spm([['▁', -1], ['a', -1]]);
  t.same(tk.encode('aé€', { addBos: false }), [id(tk, '▁'), id(tk, 'a'), byte(0xc3), byte(0xa9), byte(0xe2), byte(0x82), byte(0xac)]);
});

t.test('SPM adds BOS and the space prefix by default; the metadata can turn them off', async (t) => {
  const tk = spm([['▁', -1], ['a', -1], ['▁a', -2]]);
  t.same(tk.encode('a'), [1, id(tk, '▁a')]);
  t.same(tk.encode(''), [1], 'empty text is just BOS');
  const bare = spm([['▁', -1], ['a', -1], ['▁a', -2]], {
    'tokenizer.ggml.add_bos_token': false,
    'tokenizer.ggml.add_space_prefix': false,
  });
  t.same(bare.encode('a'), [id(bare, 'a')]);
  t.equal(bare.decode([id(bare, '▁a')]), ' a', 'no prefix to strip when none was added');
});

t.test('SPM: text after a special token gets the space prefix again', async (t) => {
  const tk = spm([['▁', -1], ['a', -1], ['▁a', -2], ['<', -9], ['/', -9], ['>', -9], ['s', -9]]);
  t.same(tk.encode('a</s>a', { addBos: false, parseSpecial: true }), [id(tk, '▁a'), 2, id(tk, '▁a')]);
  t.notSame(tk.encode('a</s>a', { addBos: false }), [id(tk, '▁a'), 2, id(tk, '▁a')], 'control text stays text by default');
});

t.test('SPM decode: ▁ is a space, byte tokens join into characters, the first space is the prefix', async (t) => {
  const tk = spm([['▁', -1], ['a', -1], ['▁a', -2]]);
  t.equal(tk.decode([id(tk, '▁a'), byte(0xe2), byte(0x82), byte(0xac), id(tk, '▁a')]), 'a€ a');
  t.equal(tk.decode([1, id(tk, '▁a')]), ' a', 'after BOS the space stays (llama.cpp)');
  t.equal(tk.decode([1, id(tk, '▁a'), 2]), ' a', 'control tokens render as nothing');
  t.equal(tk.decode([1, id(tk, '▁a'), 2], { unparseSpecial: true }), '<s> a</s>');
  t.equal(tk.decode([byte(0xe2), byte(0x82)]), '\ufffd', 'an incomplete character is U+FFFD');
});

t.test('decode refuses ids outside the vocabulary', async (t) => {
  const tk = spm([]);
  t.throws(() => tk.decode([999999]), { code: 'E_BAD_ARGUMENT' });
  t.throws(() => tk.decode([-1]), { code: 'E_BAD_ARGUMENT' });
});

t.test('BPE merges the lowest-ranked pair first, leftmost on ties', async (t) => {
  const tk = bpe(['b c', 'a b', 'a a']);
  // "abc": rank 0 (b c) before rank 1 (a b).
  t.same(tk.encode('abc'), [97, id(tk, 'bc')]);
  // "aaa": only "a a" applies; the leftmost pair merges first.
  t.same(tk.encode('aaa'), [id(tk, 'aa'), 97]);
});

t.test('BPE works on bytes: a space is Ġ, multi-byte characters are several symbols', async (t) => {
  const tk = bpe(['Ġ a', 'Ã ©']);
  t.same(tk.encode(' a'), [id(tk, 'Ġa')]);
  t.same(tk.encode('é'), [id(tk, 'Ã©')]);
  t.equal(tk.decode(tk.encode(' aé')), ' aé');
  t.equal(tk.vocab.addBos, false, 'gpt2 vocabularies add no BOS by default');
});

t.test('BPE decode cleans spaces before punctuation, as llama.cpp does for gpt-2', async (t) => {
  const tk = bpe([]);
  t.equal(tk.decode(tk.encode('Hello , world . Yes ? No !')), 'Hello, world. Yes? No!');
  t.equal(tk.decode(tk.encode("it 's we 're I 'd")), "it's we're I 'd");
});

t.test('cleanSpaces: each of llama.cpp\'s three passes', async (t) => {
  const run = (s: string) => new TextDecoder().decode(cleanSpaces(new TextEncoder().encode(s)));
  t.equal(run(' .x'), '.x', 'even a leading space before punctuation goes');
  t.equal(run("a ' b"), "a'b", "\" ' \" becomes \"'\"");
  t.equal(run("a 's a 'm a 're a 've"), "a's a'm a're a've");
  t.equal(run("a 't a 'd a 'll"), "a 't a 'd a 'll");
  t.equal(run(''), '');
});

t.test('the stream decoder holds a character until its last byte arrives', async (t) => {
  const tk = spm([['▁', -1], ['a', -1], ['▁a', -2]], { 'tokenizer.ggml.add_space_prefix': true });
  const d = tk.decoder();
  t.equal(d.push(id(tk, '▁a')), 'a', 'the first token loses its space prefix');
  t.equal(d.push(byte(0xe2)), '');
  t.equal(d.push(byte(0x82)), '');
  t.equal(d.push(byte(0xac)), '€');
  t.equal(d.push([id(tk, '▁a'), byte(0xf0), byte(0x9f)]), ' a');
  t.equal(d.push([byte(0xa6), byte(0x99)]), '🦙');
  t.equal(d.end(), '');
});

t.test('the stream decoder ends an unfinished character as U+FFFD', async (t) => {
  const tk = spm([]);
  const d = tk.decoder();
  t.equal(d.push([byte(0x61), byte(0xe2)]), 'a');
  t.equal(d.end(), '\ufffd');
});

t.test('the stream decoder holds a space until clean-up can decide on it', async (t) => {
  const tk = bpe([]);
  const ids = tk.encode("Hello , world 's end ' x");
  const d = tk.decoder();
  let text = '';
  for (const i of ids) text += d.push(i);
  text += d.end();
  t.equal(text, tk.decode(ids));
  t.equal(text, "Hello, world's end'x");
});

t.test('special tokens: user-defined always split out, control only with parseSpecial', async (t) => {
  const tk = bpe([], {}, ['<|ctl|>']);
  const user = Tokenizer.fromMetadata({
    ...metaOf(tk),
    'tokenizer.ggml.token_type': tk.vocab.tokens.map((_, i) => (i === tk.size - 1 ? USER_DEFINED : NORMAL)),
  });
  const ctl = tk.size - 1;
  t.same(tk.encode('a<|ctl|>b', { parseSpecial: true }), [97, ctl, 98]);
  t.notOk(tk.encode('a<|ctl|>b').includes(ctl));
  t.same(user.encode('a<|ctl|>b'), [97, ctl, 98]);
  t.equal(tk.decode([97, ctl, 98]), 'ab');
  t.equal(user.decode([97, ctl, 98]), 'a<|ctl|>b', 'user-defined tokens always render');
});

t.test('special tokens: longer texts are matched first', async (t) => {
  const tk = bpe([], {}, ['<x>', '<x><y>']);
  t.same(tk.encode('<x><y><x>', { parseSpecial: true }), [id(tk, '<x><y>'), id(tk, '<x>')]);
});

t.test('Phi-3 special tokens eat the whitespace that follows them', async (t) => {
  const tk = spm([['▁', -1], ['a', -1], ['▁a', -2], ['<|end|>', 0, CONTROL]], { 'general.name': 'Phi3' });
  const end = id(tk, '<|end|>');
  t.same(tk.encode('a<|end|>\n a', { addBos: false, parseSpecial: true }), [id(tk, '▁a'), end, id(tk, '▁a')]);
  t.ok(tk.isEog(end), '<|end|> ends generation');
  t.equal(tk.eot, end);
});

t.test('pre-tokenizer gpt-2: contractions, letters, digits, punctuation, whitespace runs', async (t) => {
  const gpt2 = preTokenizerFor('gpt-2').regexes;
  t.same(splitWords("Hello world's  end\n", gpt2), ['Hello', ' world', "'s", ' ', ' end', '\n']);
  t.same(splitWords('a123 456!? x', gpt2), ['a', '123', ' 456', '!?', ' x']);
  t.same(splitWords('x   ', gpt2), ['x', '   '], 'trailing whitespace stays one piece');
});

t.test('pre-tokenizer llama3: digits in threes, case-insensitive contractions, newlines', async (t) => {
  const re = preTokenizerFor('llama-bpe').regexes;
  t.same(splitWords('1234567', re), ['123', '456', '7']);
  t.same(splitWords("DON'T don't", re), ['DON', "'T", ' don', "'t"]);
  t.same(splitWords('a \n\n b', re), ['a', ' \n\n', ' b']);
  t.same(splitWords('(hello)', re), ['(hello', ')']);
});

t.test('pre-tokenizer qwen2: single digits; llama.cpp\'s whitespace, not JS\'s', async (t) => {
  const re = preTokenizerFor('qwen2').regexes;
  t.same(splitWords('x1234', re), ['x', '1', '2', '3', '4']);
  // U+0085 is whitespace for llama.cpp (JS \s disagrees); U+FEFF is not (JS \s says it is).
  t.same(splitWords('a\u0085\u0085b', re), ['a', '\u0085', '\u0085b']);
  t.same(splitWords('a\ufeffb', re), ['a', '\ufeffb']);
});

t.test('pre-tokenizer default (no tokenizer.ggml.pre): llama.cpp\'s four-regex chain', async (t) => {
  const re = preTokenizerFor(undefined).regexes;
  t.same(splitWords('hello, world!! 12345', re), ['hello', ',', ' world', '!!', ' ', '123', '45']);
});

t.test('fromMetadata accepts typed arrays and plain arrays alike', async (t) => {
  const a = spm([['▁', -1], ['a', -1], ['▁a', -2]]);
  const meta = metaOf(a);
  const b = Tokenizer.fromMetadata({
    ...meta,
    'tokenizer.ggml.scores': Array.from(meta['tokenizer.ggml.scores'] as Float32Array),
    'tokenizer.ggml.token_type': Array.from(meta['tokenizer.ggml.token_type'] as Int32Array),
    'tokenizer.ggml.bos_token_id': 1n,
  });
  t.same(b.encode('a a'), a.encode('a a'));
});

t.test('fromMetadata refuses what it cannot run, with codes', async (t) => {
  const base = metaOf(spm([]));
  const cases: Array<[Record<string, unknown>, string, RegExp]> = [
    [{ ...base, 'tokenizer.ggml.model': undefined }, 'E_MODEL_CORRUPT', /no tokenizer/],
    [{ ...base, 'tokenizer.ggml.model': 'ugm' }, 'E_MODEL_UNSUPPORTED', /"ugm"/],
    // WordPiece without its [SEP] / [UNK] (BERT's default ids 102 / 100 are past this vocabulary)
    [{ 'tokenizer.ggml.model': 'bert', 'tokenizer.ggml.tokens': ['[CLS]', 'a'] }, 'E_MODEL_CORRUPT', /\[CLS\]/],
    [{ 'tokenizer.ggml.model': 'bert', 'tokenizer.ggml.tokens': ['[CLS]', 'a'], 'tokenizer.ggml.bos_token_id': 0 }, 'E_MODEL_CORRUPT', /\[SEP\]/],
    [
      { 'tokenizer.ggml.model': 'bert', 'tokenizer.ggml.tokens': ['[CLS]', 'a'], 'tokenizer.ggml.bos_token_id': 0, 'tokenizer.ggml.seperator_token_id': 0 },
      'E_MODEL_CORRUPT',
      /\[UNK\]/,
    ],
    [{ ...base, 'tokenizer.ggml.tokens': [1, 2] }, 'E_MODEL_CORRUPT', /array of strings/],
    [{ ...base, 'tokenizer.ggml.scores': 'x' }, 'E_MODEL_CORRUPT', /scores/],
    [{ ...base, 'tokenizer.ggml.scores': new Float32Array(2) }, 'E_MODEL_CORRUPT', /2 entries/],
    [{ ...base, 'tokenizer.ggml.tokens': ['a', 'a'], 'tokenizer.ggml.scores': undefined, 'tokenizer.ggml.token_type': undefined }, 'E_MODEL_CORRUPT', /duplicate/],
    [{ ...base, 'tokenizer.ggml.add_bos_token': 'yes' }, 'E_MODEL_CORRUPT', /boolean/],
    [{ ...metaOf(bpe([])), 'tokenizer.ggml.pre': 'klingon' }, 'E_MODEL_UNSUPPORTED', /"klingon"/],
    [{ ...metaOf(bpe([])), 'tokenizer.ggml.merges': undefined }, 'E_MODEL_CORRUPT', /merges/],
  ];
  for (const [meta, code, re] of cases) {
    try {
      Tokenizer.fromMetadata(meta);
      t.fail(`expected ${code}`);
    } catch (err) {
      t.ok(err instanceof EdgeError);
      t.equal((err as EdgeError).code, code);
      t.match((err as Error).message, re);
    }
  }
});

t.test('an out-of-range special id in the metadata keeps the default (stories260K pads with 0xFFFFFFFF)', async (t) => {
  const tk = spm([], { 'tokenizer.ggml.padding_token_id': 0xffffffff, 'tokenizer.ggml.eos_token_id': 0xffffffff });
  t.equal(tk.eos, 2);
  t.equal(tk.vocab.pad, -1);
});

/** Rebuilds the metadata a Tokenizer was made from (for variations). */
function metaOf(tk: Tokenizer): Record<string, unknown> {
  const v = tk.vocab;
  const types = Array.from(v.attrs, (a) => (a & 1 ? UNKNOWN : a & 8 ? CONTROL : a & 16 ? USER_DEFINED : a & 32 ? BYTE : NORMAL));
  const meta: Record<string, unknown> = {
    'tokenizer.ggml.model': v.model === 'spm' ? 'llama' : 'gpt2',
    'tokenizer.ggml.tokens': v.tokens,
    'tokenizer.ggml.scores': v.scores,
    'tokenizer.ggml.token_type': new Int32Array(types),
  };
  if (v.model === 'bpe') {
    meta['tokenizer.ggml.pre'] = 'gpt-2';
    meta['tokenizer.ggml.merges'] = [];
  }
  return meta;
}
