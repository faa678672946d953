// `edgellm trace` and Model.trace: the exported attention is the engine's own (each row a softmax
// that sums to 1 and reproduces the attention kernel's output), the final-norm export reproduces
// the logits of the normal forward pass, the files decode (PNG through pngjs, NPY v1 headers),
// and bad arguments are refused with specific errors and exit 2.
import t from 'tap';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { HIDDEN_RGB, rampColor } from '../src/cli/heatmap.js';
import type { TraceIndex } from '../src/cli/trace.js';
import { loadModel, logSoftmax, type ModelTrace } from '../src/engine/model.js';
import { writeDeepseek2 } from './fixtures/random-deepseek2.js';
import { argmax, readWeights, writeModel, type Spec, type Weights } from './fixtures/random-model.js';
import { assertCliBuilt, requireModel, run } from './fixtures/paths.js';
import { rejects } from './helpers/rejects.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-trace-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** A .npy file (v1, little-endian float32, C order) as its shape and values. */
function readNpy(path: string): { shape: number[]; data: Float32Array } {
  const b = readFileSync(path);
  if (b.toString('latin1', 0, 6) !== '\x93NUMPY' || b[6] !== 1 || b[7] !== 0) throw new Error(`${path}: not an NPY v1.0 file`);
  const len = b.readUInt16LE(8);
  const header = b.toString('latin1', 10, 10 + len);
  if ((10 + len) % 64 !== 0 || !header.endsWith('\n')) throw new Error(`${path}: header not padded to 64 bytes`);
  const m = /^\{'descr': '<f4', 'fortran_order': False, 'shape': \(([\d, ]*)\), \}/.exec(header);
  if (!m) throw new Error(`${path}: unexpected header ${header}`);
  const shape = m[1]!.split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  const n = shape.reduce((a, c) => a * c, 1);
  if (b.length !== 10 + len + n * 4) throw new Error(`${path}: ${b.length - 10 - len} data bytes for ${n} floats`);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = b.readFloatLE(10 + len + i * 4);
  return { shape, data };
}

/** Largest |sum of row - 1| over every row of a [..., T, T] attention array. */
function worstRowSum(att: Float32Array, T: number): number {
  let worst = 0;
  for (let r = 0; r < att.length / T; r++) {
    let s = 0;
    for (let k = 0; k < T; k++) s += att[r * T + k]!;
    worst = Math.max(worst, Math.abs(s - 1));
  }
  return worst;
}

/** The largest value above the diagonal (keys after the query) of a [..., T, T] attention array. */
function worstFuture(att: Float32Array, T: number): number {
  let worst = 0;
  for (let r = 0; r < att.length / T; r++) for (let k = (r % T) + 1; k < T; k++) worst = Math.max(worst, Math.abs(att[r * T + k]!));
  return worst;
}

/** finalNorm x the output matrix (token_embd when tied), then the final soft-cap: [T][n_vocab] in float64. */
function classify(finalNorm: Float32Array, w: Weights, nEmbd: number, nVocab: number, softcap = 0): Float64Array {
  const W = w.get('output.weight') ?? w.get('token_embd.weight')!;
  const T = finalNorm.length / nEmbd;
  const out = new Float64Array(T * nVocab);
  for (let p = 0; p < T; p++) {
    for (let v = 0; v < nVocab; v++) {
      let s = 0;
      for (let d = 0; d < nEmbd; d++) s += finalNorm[p * nEmbd + d]! * W[v * nEmbd + d]!;
      out[p * nVocab + v] = softcap > 0 ? softcap * Math.tanh(s / softcap) : s;
    }
  }
  return out;
}

/** max |got - want| / max |want|. */
function relError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let diff = 0, scale = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i]! - want[i]!));
    scale = Math.max(scale, Math.abs(want[i]!));
  }
  return diff / scale;
}

// ---- stories260K through the CLI -----------------------------------------------------------------

t.test('stories260K: trace writes decodable heatmaps and NPY files whose last layer reproduces edgellm logits', async (t) => {
  assertCliBuilt();
  const model = requireModel(t, 'stories260K.gguf', 'stories260K trace');
  if (!model) return;
  const out = join(dir, 'stories');
  const r = run(['trace', '-m', model, '-p', 'Once upon a time', '--layers', '0,-1', '--heads', '0,3', '-n', '3', '--out', out, '--json']);
  t.equal(r.status, 0, r.stderr);
  const index = JSON.parse(r.stdout) as TraceIndex;
  t.same(JSON.parse(readFileSync(join(out, 'index.json'), 'utf8')), index, 'index.json holds what --json printed');
  t.same(index.layers, [0, 4], '-1 is the last of 5 layers');
  t.same(index.heads, [0, 3]);
  const T = index.tokens.length;
  t.equal(T, index.prompt_tokens + 3, 'the prompt and 3 generated tokens');
  t.same(index.tokens.slice(0, 2).map((x) => x.text), ['<s>', ' Once']);
  t.ok(index.attention_max_abs_error < 1e-4, `attention self-check ${index.attention_max_abs_error}`);

  // Every heatmap decodes, T x T cells, rows = queries and columns = keys.
  const maps = index.files.filter((f) => f.kind === 'heatmap');
  t.equal(maps.length, 4, '2 layers x 2 heads');
  for (const f of maps) {
    const png = PNG.sync.read(readFileSync(join(out, f.file)));
    const { cell, x0, y0 } = f as Required<typeof f>;
    t.ok(x0 > 0 && y0 > 0, 'margins for the token labels');
    t.equal(png.width, x0 + T * cell, `${f.file} width`);
    t.equal(png.height, y0 + T * cell, `${f.file} height`);
    const pixel = (x: number, y: number) => Array.from(png.data.subarray((y * png.width + x) * 4, (y * png.width + x) * 4 + 3));
    const at = (q: number, k: number) => pixel(x0 + k * cell + (cell >> 1), y0 + q * cell + (cell >> 1));
    const inked = (xa: number, xb: number, ya: number, yb: number) => {
      for (let y = ya; y < yb; y++) for (let x = xa; x < xb; x++) if (pixel(x, y).some((c) => c !== 255)) return true;
      return false;
    };
    t.ok(inked(0, x0, y0, y0 + cell), "row 0's label is drawn left of the grid");
    t.ok(inked(x0 + cell, x0 + 2 * cell, 0, y0), "column 1's label is drawn above the grid");
    const att = readNpy(join(out, `attn-L${f.layer}.npy`));
    const hi = index.heads.indexOf(f.head!);
    const prob = (q: number, k: number) => att.data[(hi * T + q) * T + k]!;
    t.same(at(0, 0), rampColor(1), 'the first query sees only itself: p = 1');
    t.same(at(0, T - 1), [...HIDDEN_RGB], 'keys after the query are drawn hidden');
    t.same(at(T - 1, 1), rampColor(prob(T - 1, 1)), 'the last row, second column is that probability');
    t.same(at(2, 1), rampColor(prob(2, 1)), 'row 2 (a query), column 1 (a key)');
  }

  // The page inlines every heatmap (it opens without the other files) and names every token.
  const html = readFileSync(join(out, index.html), 'utf8');
  const images = [...html.matchAll(/<img alt="layer (\d+) head (\d+)"[^>]* src="data:image\/png;base64,([^"]+)">/g)];
  t.same(images.map((m) => `${m[1]}/${m[2]}`), ['0/0', '0/3', '4/0', '4/3'], 'one inlined image per layer and head');
  for (const m of images) t.equal(PNG.sync.read(Buffer.from(m[3]!, 'base64')).width, T * maps[0]!.cell!, 'the bare grid, T cells wide');
  for (const tok of index.tokens.slice(1)) t.ok(html.includes(`title="position ${tok.position}">${tok.text}<`), `token ${tok.position} is labelled`);

  // The attention arrays: [heads, T, T], softmax rows.
  for (const layer of [0, 4]) {
    const a = readNpy(join(out, `attn-L${layer}.npy`));
    t.same(a.shape, [2, T, T]);
    t.ok(worstRowSum(a.data, T) < 1e-5, `layer ${layer}: every row sums to 1 (worst ${worstRowSum(a.data, T)})`);
    t.equal(worstFuture(a.data, T), 0, `layer ${layer}: causal`);
    t.same(readNpy(join(out, `hidden-L${layer}.npy`)).shape, [T, 64]);
  }

  // The final norm x output.weight is what `edgellm logits` computes for the same tokens.
  const ids = index.tokens.map((x) => x.id);
  const lg = run(['logits', '-m', model, '--tokens', ids.join(','), '--json']);
  t.equal(lg.status, 0, lg.stderr);
  const m = await loadModel(model, { threads: 1 });
  t.teardown(() => m.close());
  const logits = await m.evalLogits(ids, { allPositions: true });
  const fin = readNpy(join(out, 'final-norm.npy'));
  t.same(fin.shape, [T, 64]);
  const ours = classify(fin.data, readWeights(model), 64, 512);
  const err = relError(ours, logits);
  t.ok(err < 1e-5, `final norm x output = evalLogits (relative error ${err})`);
  // ... and its log-softmax is what the logits command prints, position by position.
  const rows = lg.stdout.trim().split('\n').map((l) => JSON.parse(l) as { pos: number; logprobs: number[] });
  t.equal(rows.length, T);
  for (const row of rows) {
    const lp = logSoftmax(ours.subarray(row.pos * 512, (row.pos + 1) * 512));
    t.ok(relError(lp, row.logprobs) < 1e-5, `position ${row.pos}: the logits command's log-probabilities`);
  }
  // The generated tokens are the greedy ones.
  for (let p = index.prompt_tokens; p < T; p++) t.equal(ids[p], argmax(logits.subarray((p - 1) * 512, p * 512)), `token ${p} is greedy`);
});

// ---- Every dense architecture, through the engine ------------------------------------------------

const BASE = { nVocab: 320, nEmbd: 64, nLayer: 2, nHead: 4, nHeadKv: 2, headDim: 16, nFf: 96, logitScale: 3 };
const ARCHS: Array<Spec & { window?: number; swaLayer?: number; softcap?: number }> = [
  { ...BASE, name: 'llama GQA', arch: 'llama' },
  { ...BASE, name: 'qwen2 biases', arch: 'qwen2', ropeBase: 1e6 },
  { ...BASE, name: 'qwen3 QK-norm', arch: 'qwen3', headDim: 32 },
  { ...BASE, name: 'phi3 fused QKV', arch: 'phi3', nHeadKv: 4 },
  { ...BASE, name: 'smollm3 NoPE layer', arch: 'smollm3', nLayer: 4 },
  { ...BASE, name: 'gemma3 window 4', arch: 'gemma3', nLayer: 6, nHead: 2, nHeadKv: 1, headDim: 32, window: 4, swaLayer: 0 },
  { ...BASE, name: 'gemma2 window 8 + soft-caps', arch: 'gemma2', nHead: 2, nHeadKv: 1, headDim: 32, window: 8, swaLayer: 0, softcaps: { attn: 1.5, final: 4 }, softcap: 4 },
  { ...BASE, name: 'olmoe experts', arch: 'olmoe', nHeadKv: 4, nFf: 32, nExpert: 8, nExpertUsed: 2 },
];

for (const spec of ARCHS) {
  t.test(`${spec.name}: rows sum to 1, reproduce the kernel's attention, and the final norm gives the logits`, async (t) => {
    const { path, w } = writeModel(spec, dir);
    const m = await loadModel(path, { threads: 2, batchSize: 8 });
    t.teardown(() => m.close());
    const prompt = Array.from({ length: 17 }, (_, i) => (i * 37 + 5) % spec.nVocab);
    const layers = Array.from({ length: spec.nLayer }, (_, i) => i);
    const heads = Array.from({ length: spec.nHead }, (_, i) => i);
    const tr: ModelTrace = await m.trace(prompt, { layers, heads, generate: 3 });
    const T = 20;
    t.equal(tr.tokens.length, T);
    t.ok(tr.attentionError < 1e-4, `sum p x V = the kernel's output (worst ${tr.attentionError})`);
    for (const lt of tr.layers) {
      t.ok(worstRowSum(lt.attention, T) < 1e-5, `layer ${lt.layer}: rows sum to 1`);
      t.equal(worstFuture(lt.attention, T), 0, `layer ${lt.layer}: causal`);
    }
    if (spec.window) {
      // The last query sees only the last `window` keys on a sliding-window layer, all on the global one.
      const att = tr.layers[spec.swaLayer!]!.attention;
      const last = att.subarray((T - 1) * T, T * T);
      t.equal(Math.max(...last.subarray(0, T - spec.window)), 0, 'keys outside the window have probability 0');
      const global = tr.layers[spec.nLayer - 1]!.attention.subarray((T - 1) * T, T * T);
      t.ok(Math.min(...global) > 0, 'the global layer sees every key');
    }
    const logits = await m.evalLogits(tr.tokens, { allPositions: true });
    t.same(tr.logits, logits, "the trace's own logits are the normal forward pass's");
    const err = relError(classify(tr.finalNorm, w, spec.nEmbd, spec.nVocab, spec.softcap), logits);
    t.ok(err < 1e-5, `final norm x output = evalLogits (relative error ${err})`);
  });
}

t.test('StreamingLLM sinks: a query sees the sinks and the last keys of the ring, each row still a softmax', async (t) => {
  const spec: Spec = { ...BASE, name: 'sinks', arch: 'llama' };
  const { path } = writeModel(spec, dir);
  // Full layers become rings of 2 sinks + 6 recent positions; prefill chunks of 4.
  const m = await loadModel(path, { threads: 1, batchSize: 4, contextSize: 8, sinks: 2 });
  t.teardown(() => m.close());
  const T = 20;
  const tr = await m.trace(Array.from({ length: T }, (_, i) => (i * 11 + 3) % spec.nVocab), { layers: [1], heads: [0, 3] });
  t.ok(tr.attentionError < 1e-4, `sum p x V = the kernel's output (worst ${tr.attentionError})`);
  const att = tr.layers[0]!.attention;
  t.ok(worstRowSum(att, T) < 1e-5, 'rows sum to 1');
  const last = att.subarray((T - 1) * T, T * T);
  t.ok(last[0]! > 0 && last[1]! > 0, 'the sinks are seen');
  t.equal(Math.max(...last.subarray(2, T - 6)), 0, 'positions that left the ring are not');
  t.ok(Math.min(...last.subarray(T - 6)) > 0, 'the last 6 are');
});

t.test('a trace beside running generations: neither disturbs the other', async (t) => {
  const { path } = writeModel({ ...BASE, name: 'beside', arch: 'llama' }, dir, { vocab: true });
  const m = await loadModel(path, { threads: 2, batchSize: 8, maxSequences: 2 });
  t.teardown(() => m.close());
  const request = { prompt: 'the quick brown fox', max_tokens: 150, temperature: 0 };
  const alone = (await m.generate(request).result).text;
  const prompt = Array.from({ length: 30 }, (_, i) => (i * 7 + 2) % 320);
  const traceAlone = await m.trace(prompt, { layers: [0, 1], heads: [0, 1, 2, 3], generate: 4 });
  // Two generations decode while four traces run on the same model; a few rounds, as the overlap
  // depends on the threads' timing.
  for (let round = 0; round < 4; round++) {
    const gens = [m.generate(request), m.generate(request)];
    const traces = await Promise.all([0, 1, 2, 3].map(() => m.trace(prompt, { layers: [0, 1], heads: [0, 1, 2, 3], generate: 4 })));
    for (const g of gens) t.equal((await g.result).text, alone, 'the generation is the same as alone');
    for (const tr of traces) {
      t.same(tr.tokens, traceAlone.tokens, 'the trace generates the same tokens');
      t.same(tr.layers[1]!.attention, traceAlone.layers[1]!.attention, 'and keeps the same attention');
      t.same(tr.finalNorm, traceAlone.finalNorm, 'and the same final norm');
    }
  }
});

t.test('deepseek2 is refused with E_MODEL_UNSUPPORTED naming its latent attention', async (t) => {
  const { path } = writeDeepseek2(
    {
      name: 'mla', nVocab: 320, nEmbd: 64, nLayer: 2, nHead: 4, qLoraRank: 0, kvLoraRank: 32, qkNope: 16, qkRope: 8, vDim: 16,
      nFf: 128, nFfExp: 32, nExpert: 8, nExpertUsed: 2, nShared: 1, denseLead: 1, weightsScale: 1, weightsNorm: false, splitKvB: true,
    },
    dir,
  );
  const m = await loadModel(path, { threads: 1 });
  t.teardown(() => m.close());
  await rejects(t, m.trace([1, 2, 3], { layers: [0], heads: [0] }), 'E_MODEL_UNSUPPORTED', /deepseek2/, /latent attention/);
});

t.test('Model.trace refuses an empty prompt and layers or heads out of range, naming them', async (t) => {
  const { path } = writeModel({ ...BASE, name: 'args', arch: 'llama' }, dir);
  const m = await loadModel(path, { threads: 1 });
  t.teardown(() => m.close());
  await rejects(t, m.trace([], { layers: [0], heads: [0] }), 'E_BAD_ARGUMENT', /at least one prompt token/);
  await rejects(t, m.trace([1], { layers: [2], heads: [0] }), 'E_BAD_ARGUMENT', /layer 2 is out of range/, /2 layers \(0\.\.1\)/);
  await rejects(t, m.trace([1], { layers: [0], heads: [4] }), 'E_BAD_ARGUMENT', /head 4 is out of range/);
  await rejects(t, m.trace([1], { layers: [0, 0], heads: [0] }), 'E_BAD_ARGUMENT', /layer 0 is listed twice/);
});

// ---- Bad arguments through the CLI: a specific message and exit 2 ---------------------------------

t.test('trace refuses bad arguments with a specific error and exit 2', async (t) => {
  assertCliBuilt();
  const { path } = writeModel({ ...BASE, name: 'cli args', arch: 'llama' }, dir, { vocab: true });
  const out = join(dir, 'cli-out');
  const blocker = join(dir, 'a-file');
  writeFileSync(blocker, 'not a directory');
  const clash = join(dir, 'clash');
  mkdirSync(join(clash, 'final-norm.npy'), { recursive: true }); // a directory where a file must go
  const cases: Array<[string, string[], RegExp]> = [
    ['a layer out of range', ['--layers', '0,2'], /E_BAD_ARGUMENT: --layers: 2 is out of range: .* has 2 layers \(0\.\.1, or -2\.\.-1 counting from the end\)/],
    ['a negative layer past the first', ['--layers', '-3'], /E_BAD_ARGUMENT: --layers: -3 is out of range/],
    ['a head that is not a number', ['--heads', '0,x'], /E_BAD_ARGUMENT: --heads takes all or heads like 0,5,-1 .*got "x"/],
    ['the same layer twice', ['--layers', '1,-1'], /E_BAD_ARGUMENT: --layers names layer 1 twice/],
    ['a negative -n', ['-n', '-1'], /E_BAD_ARGUMENT: -n takes a whole number from 0 to 4096/],
    ['an empty prompt', ['-p', ''], /E_BAD_ARGUMENT: -p\/--prompt is empty: give the text to trace/],
    ['an --out that cannot be created', ['--out', join(blocker, 'sub')], /E_BAD_ARGUMENT: --out .*a-file\/sub cannot be written \(ENOTDIR\): give a directory you can create and write/],
    ['an output file that cannot be written', ['--out', clash], /E_BAD_ARGUMENT: --out .*clash: writing final-norm.npy failed \(EISDIR\)/],
  ];
  for (const [what, args, message] of cases) {
    const base = new Map<string, string>([['-m', path], ['-p', 'hello'], ['--out', out]]);
    for (let i = 0; i < args.length; i += 2) base.set(args[i]!, args[i + 1]!);
    const r = run(['trace', ...[...base].flat()]);
    t.equal(r.status, 2, `${what}: exit 2 (${r.stderr.trim()})`);
    t.match(r.stderr, message, what);
  }
});
