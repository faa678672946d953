// `edgellm bench -m FILE` and benchModel(): prompt processing and decode speed of a model.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchModel } from '../src/engine/bench-model.js';
import { EdgeError } from '../src/errors.js';
import { run } from './fixtures/paths.js';
import { writeModel, type Spec } from './fixtures/random-model.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-bench-model-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const DENSE: Spec = { name: 'bench dense', arch: 'llama', nVocab: 96, nEmbd: 64, nLayer: 2, nHead: 4, nHeadKv: 2, headDim: 16, nFf: 96, type: 'Q4_0' };
const MOE: Spec = { ...DENSE, name: 'bench moe', nFf: 32, nExpert: 8, nExpertUsed: 2 };

t.test('bench -m --json prints one object with pp/tg tokens/s, bytes per token and GB/s', async (t) => {
  const { path } = writeModel(DENSE, dir);
  const r = run(['bench', '-m', path, '--n-prompt', '32', '-n', '8', '--threads', '1', '--json']);
  t.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  t.equal(lines.length, 1, 'one object');
  const o = JSON.parse(lines[0]!) as Record<string, number | string>;
  t.match(o, { arch: 'llama', threads: 1, n_prompt: 32, n_gen: 8 });
  for (const key of ['pp_tps', 'tg_tps', 'weight_bytes_per_token', 'effective_gbps']) t.ok((o[key] as number) > 0, `${key} > 0`);
  // Q4_0 rows of 64 weights are 2 blocks of 18 bytes: 4 attention + 3 FFN matrices per layer,
  // the 96-row classifier and one embedding row.
  const perLayer = (64 + 32 + 32 + 64 + 96 * 3) * 36;
  t.equal(o.weight_bytes_per_token, 2 * perLayer + 96 * 36 + 36);
  t.equal(Math.round((o.effective_gbps as number) * 1e9), Math.round((o.weight_bytes_per_token as number) * (o.tg_tps as number)));
});

t.test('bench -m prints a llama-bench style table, one pp and one tg row per thread count', async (t) => {
  const { path } = writeModel(DENSE, dir);
  const r = run(['bench', '-m', path, '--n-prompt', '16', '--n-gen', '4', '--threads', '1,2']);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^model: .*llama.*MB read per decoded token/);
  t.match(r.stdout, /pp16 +1 +\d+\.\d\d/);
  t.match(r.stdout, /tg4 +2 +\d+\.\d\d +\d+\.\d\d/);
});

t.test('a MoE model reads only its used experts per decoded token', async (t) => {
  const { path } = writeModel(MOE, dir);
  const r = await benchModel(path, { threads: 1, promptTokens: 0, genTokens: 4 });
  const attention = (64 + 32 + 32 + 64) * 36;
  const expert = (32 + 32) * 36 + 64 * 18; // gate and up: 32 rows of 64; down: 64 rows of 32
  t.equal(r.weight_bytes_per_token, 2 * (attention + 8 * 64 * 4 + 2 * expert) + 96 * 36 + 36, 'router (F32) + 2 of 8 experts');
  t.equal(r.pp_tps, 0, '--n-prompt 0 skips pp');
});

t.test('bench -m refuses bad values with codes', async (t) => {
  const { path } = writeModel(DENSE, dir);
  const bad = run(['bench', '-m', path, '--n-prompt', 'x']);
  t.equal(bad.status, 2);
  t.match(bad.stderr, /E_BAD_ARGUMENT: --n-prompt takes a positive whole number/);
  // llama-bench's -p is a count; in edgellm -p is a prompt's text, so bench names the flag to use.
  const oldSpelling = run(['bench', '-m', path, '-p', '32']);
  t.equal(oldSpelling.status, 2);
  t.equal(oldSpelling.stderr, 'edgellm: E_BAD_ARGUMENT: bench counts prompt tokens with --n-prompt 32 (-p is a prompt\'s text in edgellm): see `edgellm bench --help`\n');
  const other = run(['bench', 'kernels', '-m', path]);
  t.equal(other.status, 2);
  t.match(other.stderr, /does not take -m/);
  const err = await benchModel(join(dir, 'missing.gguf')).then(() => undefined, (e: unknown) => e);
  t.ok(err instanceof EdgeError && err.code === 'E_MODEL_NOT_FOUND', 'a missing file is E_MODEL_NOT_FOUND');
});
