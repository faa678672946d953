// LoRA adapters (Model.loadAdapter; native/src/model/lora.h) against llama.cpp, which loads the
// same GGUF adapter files (node-llama-cpp's context `lora` option), on a random F32 base and
// random F32 (and F16) adapters written with the project's GGUF writer:
// - with the adapter, KL(llama.cpp || edgellm) <= 1e-4 nats over the positions, while the base
//   alone differs from the adapted model measurably (so the comparison can fail);
// - sequences with and without adapters evaluated together each match their solo runs, and so do
//   concurrent generations through the decode loop;
// - adapters that do not fit, and adapters of another model, are refused with coded errors.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../src/engine/model.js';
import { writeModel, type Spec } from './fixtures/random-model.js';
import { writeLora } from './fixtures/random-lora.js';
import { disposeLlamaCpp, edgellmRows, fmt, llamaCppRows, meanEntropy, meanKl, randomTokens } from './fixtures/parity.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-lora-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
t.teardown(disposeLlamaCpp);

const SPEC: Spec = {
  name: 'lora base', arch: 'llama', nVocab: 320, nEmbd: 64, nLayer: 2, nHead: 4, nHeadKv: 2, headDim: 16, nFf: 96,
  logitScale: 3, contextLength: 512,
};
const POSITIONS = 48;

t.test("with a LoRA adapter, edgellm's next-token distributions match llama.cpp's (KL <= 1e-4)", async (t) => {
  const { path } = writeModel(SPEC, dir, { vocab: true });
  // Small entries: the adapter moves the distributions clearly without swamping the base.
  const adapter = writeLora(SPEC, dir, { rank: 8, alpha: 16, scale: 0.08, seed: 3 });
  const lora = [{ filePath: adapter, scale: 0.7 }];
  const tokens = randomTokens(POSITIONS, SPEC.nVocab, 5);
  const theirs = await llamaCppRows(path, tokens, SPEC.nVocab, lora);
  const ours = await edgellmRows(path, tokens, lora);
  const base = await edgellmRows(path, tokens);
  const kl = meanKl(theirs, ours);
  const moved = meanKl(theirs, base);
  t.ok(meanEntropy(theirs) > 0.5, `the distributions are not degenerate (entropy ${meanEntropy(theirs).toFixed(2)} nats)`);
  t.ok(kl <= 1e-4, `KL(llama.cpp || edgellm) = ${fmt(kl)} <= 1e-4 with the adapter`);
  t.ok(moved > 1e-2, `the base model alone is ${fmt(moved)} nats away from the adapted one (> 1e-2: the test can fail)`);
});

t.test('an adapter without alpha scales by the user scale alone, as llama.cpp does', async (t) => {
  const { path } = writeModel(SPEC, dir, { vocab: true });
  const adapter = writeLora(SPEC, dir, { rank: 4, alpha: 0, scale: 0.1, seed: 4, targets: (n) => n.includes('attn_') || n === 'output.weight' });
  const lora = [{ filePath: adapter, scale: 1.3 }];
  const tokens = randomTokens(24, SPEC.nVocab, 6);
  const kl = meanKl(await llamaCppRows(path, tokens, SPEC.nVocab, lora), await edgellmRows(path, tokens, lora));
  t.ok(kl <= 1e-4, `KL = ${fmt(kl)} <= 1e-4`);
});

t.test('an F16 adapter (what convert_lora_to_gguf.py writes) matches llama.cpp too', async (t) => {
  const { path } = writeModel(SPEC, dir, { vocab: true });
  const adapter = writeLora(SPEC, dir, { rank: 16, alpha: 32, scale: 0.06, seed: 8, type: 'F16' });
  const lora = [{ filePath: adapter, scale: 1 }];
  const tokens = randomTokens(24, SPEC.nVocab, 9);
  const theirs = await llamaCppRows(path, tokens, SPEC.nVocab, lora);
  const kl = meanKl(theirs, await edgellmRows(path, tokens, lora));
  const moved = meanKl(theirs, await edgellmRows(path, tokens));
  t.ok(kl <= 1e-4, `KL = ${fmt(kl)} <= 1e-4`);
  t.ok(moved > 1e-2, `the adapter moves the distributions by ${fmt(moved)} nats`);
});

t.test('sequences with and without an adapter evaluated in one batch each match their solo runs', async (t) => {
  const { path } = writeModel(SPEC, dir, { vocab: true });
  const model = await loadModel(path, { threads: 2, contextSize: 64 });
  t.teardown(() => model.close());
  const adapter = await model.loadAdapter(writeLora(SPEC, dir, { rank: 8, alpha: 16, scale: 0.08, seed: 3 }));
  t.match(adapter, { id: 0, pairs: 2 * 7 + 1, max_rank: 8, alpha: 16 });
  const V = SPEC.nVocab;
  const a = randomTokens(20, V, 7), b = randomTokens(17, V, 8);
  const lora = [{ adapter, scale: 0.7 }];
  // Prefill 6 tokens each, then the rest in shared steps: one column with the adapter, one without.
  const [withLora, without] = await model.evalSequences([{ tokens: a, prefill: 6, lora }, { tokens: b, prefill: 6 }]);
  const soloWith = await model.evalLogits(a, { allPositions: true, lora });
  const soloWithout = await model.evalLogits(b, { allPositions: true });
  const worst = (x: Float32Array, y: Float32Array) => x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i]!)), 0);
  t.ok(worst(withLora!, soloWith) < 1e-4, `with the adapter: max |batched - solo| = ${fmt(worst(withLora!, soloWith))}`);
  t.ok(worst(without!, soloWithout) < 1e-4, `without: max |batched - solo| = ${fmt(worst(without!, soloWithout))}`);
  const plain = await model.evalLogits(a, { allPositions: true });
  t.ok(worst(plain, soloWith) > 1e-2, 'the adapter changes the logits (so the comparison can fail)');
});

t.test('concurrent generations with and without an adapter each produce their solo text', async (t) => {
  const { path } = writeModel(SPEC, dir, { vocab: true });
  const model = await loadModel(path, { threads: 2, contextSize: 128, maxSequences: 4 });
  t.teardown(() => model.close());
  const adapter = await model.loadAdapter(writeLora(SPEC, dir, { rank: 8, alpha: 16, scale: 0.15, seed: 9 }));
  const request = (lora: boolean) => ({ prompt: 'a b c', max_tokens: 12, temperature: 0, ...(lora ? { lora: [{ adapter }] } : {}) });
  const soloWith = (await model.generate(request(true)).result).text;
  const soloWithout = (await model.generate(request(false)).result).text;
  t.not(soloWith, soloWithout, 'the adapter changes the greedy text (so the comparison can fail)');
  const gens = [true, false, true, false].map((l) => model.generate(request(l)));
  const texts = await Promise.all(gens.map(async (g) => (await g.result).text));
  t.same(texts, [soloWith, soloWithout, soloWith, soloWithout]);
});

t.test('adapters that do not fit the model, or belong to another model, are refused with coded errors', async (t) => {
  const { path } = writeModel(SPEC, dir, { vocab: true });
  const model = await loadModel(path, { threads: 1, contextSize: 32 });
  t.teardown(() => model.close());
  const other = await loadModel(path, { threads: 1, contextSize: 32 });
  t.teardown(() => other.close());
  const qwen = writeLora(SPEC, dir, { rank: 4, alpha: 0, seed: 21, arch: 'qwen2' });
  await t.rejects(model.loadAdapter(qwen), { code: 'E_MODEL_UNSUPPORTED', message: /architecture 'qwen2' but the model is 'llama'/ });
  const wider = writeLora({ ...SPEC, name: 'wider', nFf: 128 }, dir, { rank: 4, alpha: 0, seed: 22, targets: (n) => n === 'blk.0.ffn_up.weight' });
  await t.rejects(model.loadAdapter(wider), { code: 'E_MODEL_UNSUPPORTED', message: /'blk\.0\.ffn_up\.weight' is \[64, 96\] in the base model/ });
  await t.rejects(model.loadAdapter(path), { code: 'E_MODEL_UNSUPPORTED', message: /not a LoRA adapter/ });
  await t.rejects(model.loadAdapter(join(dir, 'missing.gguf')), { code: 'E_MODEL_NOT_FOUND' });
  const theirs = await other.loadAdapter(writeLora(SPEC, dir, { rank: 4, alpha: 0, seed: 23 }));
  await t.rejects(model.evalLogits([1, 2], { lora: [{ adapter: theirs }] }), { code: 'E_UNKNOWN_ADAPTER' });
  t.throws(() => model.generate({ prompt: 'a', max_tokens: 1, lora: [{ adapter: theirs }] }), { code: 'E_UNKNOWN_ADAPTER' });
  const mine = await model.loadAdapter(writeLora(SPEC, dir, { rank: 4, alpha: 0, seed: 24 }));
  t.throws(() => model.generate({ prompt: 'a', max_tokens: 1, lora: [{ adapter: mine, scale: Number.NaN }] }), { code: 'E_BAD_REQUEST' });
  await t.rejects(model.evalLogits([1], { lora: 'x' as never }), { code: 'E_BAD_ARGUMENT', message: /lora must be an array/ });
});
