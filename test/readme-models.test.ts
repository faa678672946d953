// The README's "Models" table: every architecture it lists is one the engine loads
// (supportedArchitectures(), from native read_model_config), and its computed columns are the
// engine's own: each model's real shape (its config.json) at llama.cpp's quantization mix, written
// as a header-only GGUF (test/fixtures/shape-gguf.ts), through modelRequirements and memoryFit (what
// `edgellm inspect --context 2048` prints), and a Pi 5 decode ceiling from the weights one token reads.
// The test fails when the table and the code disagree; its comment prints the rows it expects.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufInfo } from '../src/engine/gguf.js';
import type { QuantizeType } from '../src/engine/quant-mix.js';
import { memoryFit, modelRequirements, supportedArchitectures } from '../src/engine/requirements.js';
import { formatBytes } from '../src/cli/units.js';
import { root } from './fixtures/paths.js';
import { specMetadata, specTensors, type Spec } from './fixtures/random-model.js';
import { writeShapeGguf } from './fixtures/shape-gguf.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-models-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** The context the shipped config (systemd/config.yaml) gives each request. */
const CONTEXT = 2048;
/** A Pi 5 with 8 GB, as the verdict sees it: its RAM less 0.5 GiB for the OS and services. */
const GiB = 1024 ** 3;
const PI5_8GB = { totalBytes: 8 * GiB, availableBytes: 7.5 * GiB, source: '/proc/meminfo' as const };
/** Decode is bound by DRAM reads: the lower of the two Pi 5 rates scripts/arm-model.mjs --bandwidth uses. */
const PI5_READ_BYTES_PER_S = 10e9;

/** Each table row's model: its config.json shape (HF), the mix of its file. */
const MODELS: Array<{ model: string; mix: QuantizeType; spec: Spec }> = [
  { model: 'Llama-3.2-1B-Instruct', mix: 'q4_k_m', spec: { name: 'l', arch: 'llama', nVocab: 128256, nEmbd: 2048, nLayer: 16, nHead: 32, nHeadKv: 8, headDim: 64, nFf: 8192, tied: true, contextLength: 131072 } },
  { model: 'Qwen2.5-0.5B-Instruct', mix: 'q4_k_m', spec: { name: 'q2', arch: 'qwen2', nVocab: 151936, nEmbd: 896, nLayer: 24, nHead: 14, nHeadKv: 2, headDim: 64, nFf: 4864, tied: true, contextLength: 32768 } },
  { model: 'Qwen3-1.7B', mix: 'q4_k_m', spec: { name: 'q3', arch: 'qwen3', nVocab: 151936, nEmbd: 2048, nLayer: 28, nHead: 16, nHeadKv: 8, headDim: 128, nFf: 6144, contextLength: 40960 } },
  { model: 'gemma-3-1b-it', mix: 'q4_k_m', spec: { name: 'g3', arch: 'gemma3', nVocab: 262144, nEmbd: 1152, nLayer: 26, nHead: 4, nHeadKv: 1, headDim: 256, nFf: 6912, window: 512, contextLength: 32768 } },
  { model: 'gemma-2-2b-it', mix: 'q4_k_m', spec: { name: 'g2', arch: 'gemma2', nVocab: 256000, nEmbd: 2304, nLayer: 26, nHead: 8, nHeadKv: 4, headDim: 256, nFf: 9216, window: 4096, softcaps: { attn: 50, final: 30 }, contextLength: 8192 } },
  { model: 'SmolLM3-3B', mix: 'q4_k_m', spec: { name: 's3', arch: 'smollm3', nVocab: 128256, nEmbd: 2048, nLayer: 36, nHead: 16, nHeadKv: 4, headDim: 128, nFf: 11008, tied: true, contextLength: 65536 } },
  { model: 'Phi-3.5-mini-instruct', mix: 'q4_k_m', spec: { name: 'p3', arch: 'phi3', nVocab: 32064, nEmbd: 3072, nLayer: 32, nHead: 32, nHeadKv: 32, headDim: 96, nFf: 8192, contextLength: 131072, longRope: { origContext: 4096, attnFactor: 1.19 } } },
  { model: 'OLMoE-1B-7B-0924-Instruct', mix: 'q4_k_m', spec: { name: 'o', arch: 'olmoe', nVocab: 50304, nEmbd: 2048, nLayer: 16, nHead: 16, nHeadKv: 16, headDim: 128, nFf: 1024, nExpert: 64, nExpertUsed: 8, contextLength: 4096 } },
  { model: 'Qwen3-30B-A3B', mix: 'q4_k_m', spec: { name: 'q3m', arch: 'qwen3moe', nVocab: 151936, nEmbd: 2048, nLayer: 48, nHead: 32, nHeadKv: 4, headDim: 128, nFf: 768, nExpert: 128, nExpertUsed: 8, contextLength: 40960 } },
];

/** Bytes of weights one decoded token reads: all but the embedding table (one row) and the unused experts. */
function bytesPerToken(path: string, spec: Spec): number {
  const info = readGgufInfo(path);
  const tied = !info.tensors.some((x) => x.name === 'output.weight');
  return info.tensors.reduce((n, x) => {
    if (x.name === 'token_embd.weight') return n + (tied ? x.bytes : x.bytes / spec.nVocab);
    if (x.name.includes('_exps.')) return n + (x.bytes / spec.nExpert!) * spec.nExpertUsed!;
    return n + x.bytes;
  }, 0);
}

/** The computed cells of a model's row: memory at CONTEXT, KV of each further sequence, the 8 GB verdict, the decode ceiling. */
async function computedCells(m: (typeof MODELS)[number]): Promise<string[]> {
  const path = join(dir, `${m.spec.name}.gguf`);
  const tensors = specTensors(m.spec).map(({ name, shape }) => ({ name, shape }));
  await writeShapeGguf(path, specMetadata(m.spec), tensors, m.mix);
  const req = modelRequirements(path, { contextSize: CONTEXT });
  const fit = memoryFit(req, PI5_8GB);
  const tps = PI5_READ_BYTES_PER_S / bytesPerToken(path, m.spec);
  return [
    `${formatBytes(fit.neededBytes)} (${fit.verdict} in 8 GB)`,
    formatBytes(req.kv_bytes_per_sequence),
    `≤ ${tps >= 10 ? tps.toFixed(0) : tps.toFixed(1)} t/s`,
  ];
}

/** The README's table under "## Models": cells of each body row. */
function readmeRows(): string[][] {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const start = readme.indexOf('\n## Models\n');
  if (start < 0) throw new Error('README.md has no "## Models" section');
  const section = readme.slice(start, readme.indexOf('\n## ', start + 1));
  const lines = section.split('\n').filter((l) => l.startsWith('| '));
  return lines.slice(2).map((l) => l.slice(2, -2).split(' | '));
}

t.test('every architecture in the README\'s Models table is one the engine loads', async (t) => {
  const supported = supportedArchitectures();
  t.ok(supported.includes('llama') && supported.includes('deepseek2'), `the engine's list: ${supported.join(', ')}`);
  const rows = readmeRows();
  t.ok(rows.length >= 5, `${rows.length} rows`);
  for (const row of rows) {
    const arch = row[0]!.replace(/`/g, '');
    t.ok(supported.includes(arch), `${arch} (${row[1]}) is loaded by the engine`);
  }
});

t.test("the Models table's memory, KV and decode columns are the engine's requirements for each model's shape", async (t) => {
  const computed = new Map<string, string[]>();
  for (const m of MODELS) computed.set(m.model, await computedCells(m));
  t.comment('\n' + MODELS.map((m) => `${m.model} (${m.spec.arch}): ${computed.get(m.model)!.join(' | ')}`).join('\n'));
  const rows = readmeRows();
  for (const m of MODELS) {
    const row = rows.find((r) => r[1]!.includes(m.model));
    if (!row) {
      t.fail(`the README's Models table has no row for ${m.model}`);
      continue;
    }
    t.equal(row[0]!.replace(/`/g, ''), m.spec.arch, `${m.model}: architecture`);
    t.same(row.slice(-3), computed.get(m.model), `${m.model}: memory at ${CONTEXT}, KV per further sequence, Pi 5 decode ceiling`);
  }
});
