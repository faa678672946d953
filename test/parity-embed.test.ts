// Embedding parity with llama.cpp (node-llama-cpp's embedding context, pinned): random bert and
// nomic-bert encoders written here as llama.cpp reads them, at F32 and F16, each pooling type;
// the same tokens through both engines, cos(edgellm, llama.cpp) >= 0.9999. Q8_0 and Q4_0 weights
// are held to 0.999: both engines quantize the activations to Q8_0, and a last-bit difference
// before that (LayerNorm sums, GELU) can flip a code, which a 2-layer random model amplifies to
// about 1e-4 (measured 0.99991-0.99995). And the refusals: pooling none, a generative model,
// empty and too-long inputs.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Token } from 'node-llama-cpp';
import { loadModel } from '../src/engine/model.js';
import { disposeLlamaCpp, llamaCpp, randomTokens } from './fixtures/parity.js';
import { cosine, WP, writeEncoder, type EncoderSpec } from './fixtures/random-encoder.js';
import { writeModel } from './fixtures/random-model.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-parity-embed-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
t.teardown(disposeLlamaCpp);

const N_VOCAB = 400;
// bge-small / all-MiniLM scaled down: 384 wide with 12 heads of 32 -> 64 wide, 4 heads of 16.
const BERT = { nEmbd: 64, nLayer: 2, nHead: 4, nFf: 128, contextLength: 128 };
const SPECS: EncoderSpec[] = [
  { ...BERT, name: 'bert mean', arch: 'bert', pooling: 1 },
  { ...BERT, name: 'bert cls', arch: 'bert', pooling: 2 },
  { ...BERT, name: 'bert fused qkv last', arch: 'bert', pooling: 3, fusedQkv: true },
  { ...BERT, name: 'nomic-bert mean', arch: 'nomic-bert', pooling: 1, nFf: 96, contextLength: 256 },
  { ...BERT, name: 'nomic-bert cls', arch: 'nomic-bert', pooling: 2, nFf: 96, contextLength: 256 },
];

/** [CLS] random ids [SEP], as both engines' tokenizers frame an input. */
function input(n: number, seed: number): number[] {
  const ids = randomTokens(n, N_VOCAB - 5, seed).map((x) => x + 5);
  return [WP.CLS, ...ids, WP.SEP];
}

async function llamaCppEmbedding(path: string, tokens: number[]): Promise<number[]> {
  const model = await (await llamaCpp()).loadModel({ modelPath: path, gpuLayers: 0 });
  try {
    const ctx = await model.createEmbeddingContext({ contextSize: 256, batchSize: 256, threads: 2 });
    try {
      return [...(await ctx.getEmbeddingFor(tokens as Token[])).vector];
    } finally {
      await ctx.dispose();
    }
  } finally {
    await model.dispose();
  }
}

for (const spec of SPECS) {
  for (const type of ['F32', 'F16', 'Q8_0', 'Q4_0'] as const) {
    const bound = type === 'F32' || type === 'F16' ? 0.9999 : 0.999;
    t.test(`${spec.name} ${type}: cos(edgellm, llama.cpp) >= ${bound}`, async (t) => {
      const path = writeEncoder({ ...spec, type }, dir, N_VOCAB);
      const model = await loadModel(path, { threads: 2 });
      try {
        t.equal(model.info().encoder, true);
        for (const [n, seed] of [[1, 3], [20, 4], [90, 5]] as const) {
          const tokens = input(n, seed);
          const ours = await model.embed(tokens);
          const theirs = await llamaCppEmbedding(path, tokens);
          t.equal(ours.length, spec.nEmbd, 'n_embd floats');
          const norm = Math.sqrt(ours.reduce((a, x) => a + x * x, 0));
          t.ok(Math.abs(norm - 1) < 1e-5, `unit length (${norm})`);
          const cos = cosine(ours, theirs);
          t.ok(cos >= bound, `${tokens.length} tokens: cos ${cos.toFixed(7)}`);
        }
      } finally {
        model.close();
      }
    });
  }
}

t.test('bge-small-en-v1.5\'s shape (384 wide, 12 layers of 12 heads, FFN 1536, 30522 tokens), F16, 128 tokens: cos >= 0.9999', async (t) => {
  const V = 30522;
  const path = writeEncoder({ name: 'bge small shape', arch: 'bert', nEmbd: 384, nLayer: 12, nHead: 12, nFf: 1536, contextLength: 512, pooling: 2, type: 'F16' }, dir, V);
  const tokens = [WP.CLS, ...randomTokens(126, V - 5, 1).map((x) => x + 5), WP.SEP];
  const model = await loadModel(path, { threads: 2 });
  const ours = await model.embed(tokens);
  model.close();
  const cos = cosine(ours, await llamaCppEmbedding(path, tokens));
  t.ok(cos >= 0.9999, `cos ${cos.toFixed(7)}`);
});

t.test('pooling matters: mean, cls and last of the same weights are different embeddings', async (t) => {
  const tokens = input(12, 9);
  const out: Float32Array[] = [];
  for (const pooling of [1, 2, 3]) {
    const path = writeEncoder({ ...BERT, name: `bert pooling ${pooling}`, arch: 'bert', pooling }, dir, N_VOCAB);
    const model = await loadModel(path, { threads: 2 });
    out.push(await model.embed(tokens));
    model.close();
  }
  t.ok(cosine(out[0]!, out[1]!) < 0.99 && cosine(out[1]!, out[2]!) < 0.99, 'three different vectors');
});

t.test('refusals have their own codes', async (t) => {
  const none = writeEncoder({ ...BERT, name: 'bert none', arch: 'bert', pooling: 0 }, dir, N_VOCAB);
  let model = await loadModel(none, { threads: 1 });
  await t.rejects(model.embed(input(3, 1)), { code: 'E_NO_POOLING' });
  model.close();

  const rank = writeEncoder({ ...BERT, name: 'bert rank', arch: 'bert', pooling: 4 }, dir, N_VOCAB);
  model = await loadModel(rank, { threads: 1 });
  await t.rejects(model.embed(input(3, 1)), { code: 'E_MODEL_UNSUPPORTED' });
  model.close();

  const mean = writeEncoder({ ...BERT, name: 'bert refusals', arch: 'bert', pooling: 1 }, dir, N_VOCAB);
  model = await loadModel(mean, { threads: 1 });
  await t.rejects(model.embed([]), { code: 'E_EMPTY_INPUT' });
  await t.rejects(model.embed(''), { code: 'E_EMPTY_INPUT' });
  await t.rejects(model.embed(input(BERT.contextLength, 2)), { code: 'E_INPUT_TOO_LONG', message: /130 tokens, more than the 128/ });
  await t.rejects(model.embed([WP.CLS, N_VOCAB, WP.SEP]), { code: 'E_BAD_ARGUMENT' });
  t.throws(() => model.generate({ prompt: 'hello' }), { code: 'E_NOT_GENERATIVE' });
  await t.rejects(model.evalLogits([WP.CLS]), { code: 'E_NOT_GENERATIVE' });
  model.close();

  const { path: llama } = writeModel(
    { name: 'llama decoder', arch: 'llama', nVocab: 300, nEmbd: 32, nLayer: 1, nHead: 2, nHeadKv: 2, headDim: 16, nFf: 64 },
    dir,
  );
  model = await loadModel(llama, { threads: 1 });
  await t.rejects(model.embed([1, 2, 3]), { code: 'E_NOT_EMBEDDING_MODEL' });
  model.close();
});
