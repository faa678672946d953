// `--lora PATH[:SCALE]` on `edgellm logits` and `edgellm generate` (src/cli/lora.ts): the CLI runs
// the adapter at the scale given, and a bad value is one line `edgellm: E_BAD_ARGUMENT: ...`, exit 2.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel, logSoftmax } from '../src/engine/model.js';
import { parseLoraFlag } from '../src/cli/lora.js';
import { writeModel, type Spec } from './fixtures/random-model.js';
import { writeLora } from './fixtures/random-lora.js';
import { assertCliBuilt, run } from './fixtures/paths.js';

t.before(assertCliBuilt);
const dir = mkdtempSync(join(tmpdir(), 'edgellm-lora-cli-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const SPEC: Spec = { name: 'lora cli', arch: 'llama', nVocab: 320, nEmbd: 64, nLayer: 2, nHead: 4, nHeadKv: 2, headDim: 16, nFf: 96, logitScale: 3 };

t.test('--lora PATH[:SCALE] parses the scale after the last colon, default 1', async (t) => {
  t.same(parseLoraFlag('style.gguf'), { path: 'style.gguf', scale: 1 });
  t.same(parseLoraFlag('style.gguf:0.5'), { path: 'style.gguf', scale: 0.5 });
  t.same(parseLoraFlag('C:/a/b.gguf:-1e-1'), { path: 'C:/a/b.gguf', scale: -0.1 });
  t.throws(() => parseLoraFlag('style.gguf:half'), { code: 'E_BAD_ARGUMENT', message: /SCALE a number/ });
  t.throws(() => parseLoraFlag(':2'), { code: 'E_BAD_ARGUMENT', message: /the path of an adapter/ });
});

t.test('edgellm logits --lora prints the adapted distributions at the scale given', async (t) => {
  const { path } = writeModel(SPEC, dir, { vocab: true });
  const adapter = writeLora(SPEC, dir, { rank: 8, alpha: 16, scale: 0.08, seed: 3 });
  const tokens = [1, 40, 77, 300];
  const rows = (args: string[]) => {
    const r = run(['logits', '-m', path, '--tokens', tokens.join(','), '--json', ...args]);
    t.equal(r.status, 0, r.stderr);
    return r.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { logprobs: number[] }).logprobs);
  };
  const cliRows = rows(['--lora', `${adapter}:0.7`]);
  const baseRows = rows([]);
  const model = await loadModel(path, { threads: 1, contextSize: 8 });
  t.teardown(() => model.close());
  const a = await model.loadAdapter(adapter);
  const logits = await model.evalLogits(tokens, { allPositions: true, lora: [{ adapter: a, scale: 0.7 }] });
  const V = SPEC.nVocab;
  let worst = 0, moved = 0;
  tokens.forEach((_, p) => {
    const api = logSoftmax(logits.subarray(p * V, (p + 1) * V));
    for (let i = 0; i < V; i++) {
      worst = Math.max(worst, Math.abs(cliRows[p]![i]! - api[i]!));
      moved = Math.max(moved, Math.abs(baseRows[p]![i]! - api[i]!));
    }
  });
  t.ok(worst < 1e-5, `the CLI's rows are the API's with the adapter at 0.7 (max diff ${worst})`);
  t.ok(moved > 1e-2, `and differ from the base model's (max diff ${moved})`);
});

t.test('a bad --lora is one line, exit 2, naming the flag', async (t) => {
  const { path } = writeModel(SPEC, dir, { vocab: true });
  for (const [args, re] of [
    [['logits', '-m', path, '--tokens', '1', '--lora', 'x.gguf:big'], /^edgellm: E_BAD_ARGUMENT: --lora takes PATH\[:SCALE\]/],
    [['generate', '-m', path, '-p', 'a', '--lora', ':1'], /^edgellm: E_BAD_ARGUMENT: --lora takes the path of an adapter/],
    [['generate', '-m', path, '-p', 'a', '--lora', path], /^edgellm: E_MODEL_UNSUPPORTED: .*not a LoRA adapter/],
  ] as const) {
    const r = run([...args]);
    t.equal(r.status, 2, `${args.join(' ')}: exit 2`);
    t.equal(r.stderr.split('\n').length, 2, `one line: ${r.stderr}`);
    t.match(r.stderr, re);
  }
});
