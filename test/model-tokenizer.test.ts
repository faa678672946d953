// Building the tokenizer is part of loading a model: a file whose tokenizer edgellm cannot build
// is refused by loadModel, `serve` (before it reports ready), `doctor` and `inspect`, naming the
// GGUF key and value; a file without a tokenizer still loads for token-id evaluation.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkModel } from '../src/cli/doctor.js';
import { readGgufInfo } from '../src/engine/gguf.js';
import { GgufWriter, meta, writeValueOf } from '../src/engine/gguf-writer.js';
import { loadModel } from '../src/engine/model.js';
import { modelRequirements } from '../src/engine/requirements.js';
import { readWeights, writeModel, type Spec } from './fixtures/random-model.js';
import { assertCliBuilt, cli, root, run } from './fixtures/paths.js';
import { freePort } from './helpers/broker.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-model-tokenizer-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
t.before(assertCliBuilt);

const SPEC: Spec = { name: 'tk', arch: 'llama', nVocab: 320, nEmbd: 64, nLayer: 1, nHead: 4, nHeadKv: 2, headDim: 16, nFf: 96 };
const UNKNOWN_PRE = /tokenizer\.ggml\.pre = "no-such-pre" is a pre-tokenizer edgellm does not know \(it knows .*smollm.*\): use a GGUF/;

function modelWithPre(pre: string): string {
  return writeModel({ ...SPEC, name: `tk-${pre}` }, dir, { vocab: { pre } }).path;
}

t.test('loadModel refuses an unknown pre-tokenizer with E_MODEL_UNSUPPORTED naming the file, key and value', async (t) => {
  const path = modelWithPre('no-such-pre');
  await t.rejects(loadModel(path, { threads: 1 }), { code: 'E_MODEL_UNSUPPORTED', message: UNKNOWN_PRE });
  await t.rejects(loadModel(path, { threads: 1 }), { message: new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `) });
});

t.test('loadModel refuses a tokenizer model it does not run, naming tokenizer.ggml.model', async (t) => {
  const { path } = writeModel({ ...SPEC, name: 'tk-rwkv' }, dir, { vocab: { pre: 'gpt-2' } });
  // The same file with another tokenizer.ggml.model.
  const info = readGgufInfo(path);
  const w = new GgufWriter();
  for (const [k, v] of Object.entries(info.metadata)) w.setMeta(k, k === 'tokenizer.ggml.model' ? meta.string('rwkv') : writeValueOf(info.metadataTypes[k]!, v));
  const weights = readWeights(path);
  for (const ti of info.tensors) w.addTensor({ name: ti.name, type: ti.type, shape: ti.shape, data: Float32Array.from(weights.get(ti.name)!) });
  const rwkv = join(dir, 'tk-rwkv-tokenizer.gguf');
  w.writeFile(rwkv);
  await t.rejects(loadModel(rwkv, { threads: 1 }), { code: 'E_MODEL_UNSUPPORTED', message: /tokenizer\.ggml\.model = "rwkv" is a tokenizer edgellm does not run/ });
});

t.test('a known pre-tokenizer loads and the tokenizer is ready at once', async (t) => {
  const model = await loadModel(modelWithPre('smollm'), { threads: 1 });
  t.teardown(() => model.close());
  t.ok(model.tokenizer.encode('ab 12').length > 0, 'encodes');
  t.equal(model.tokenizer.vocab.pre?.name, 'smollm');
});

t.test('a file without a tokenizer loads for evaluation; asking it for text is E_MODEL_CORRUPT', async (t) => {
  const { path } = writeModel({ ...SPEC, name: 'tk-none' }, dir);
  const model = await loadModel(path, { threads: 1 });
  t.teardown(() => model.close());
  t.equal((await model.evalLogits([1, 2, 3])).length, SPEC.nVocab);
  t.throws(() => model.tokenizer, { code: 'E_MODEL_CORRUPT', message: /tokenizer\.ggml\.model is missing/ });
});

t.test('inspect reports the tokenizer: its kind when it builds, BLOCKED with the reason when it does not', async (t) => {
  const ok = modelRequirements(modelWithPre('deepseek-llm'));
  t.same(ok.tokenizer, { status: 'ok', model: 'bpe', pre: 'deepseek-llm', n_tokens: SPEC.nVocab });
  const bad = modelRequirements(modelWithPre('no-such-pre'));
  t.equal(bad.tokenizer.status, 'blocked');
  t.match(bad.tokenizer, { code: 'E_MODEL_UNSUPPORTED', message: UNKNOWN_PRE });
  t.same(modelRequirements(writeModel({ ...SPEC, name: 'tk-none2' }, dir).path).tokenizer, { status: 'none' });

  const text = run(['inspect', modelWithPre('no-such-pre')]);
  t.equal(text.status, 0, text.stderr);
  t.match(text.stdout, /^tokenizer:\s+E_MODEL_UNSUPPORTED: .*tokenizer\.ggml\.pre = "no-such-pre"/m);
  t.match(text.stdout, /^loading:\s+BLOCKED by its tokenizer \(see tokenizer: above\)$/m);
  const json = run(['inspect', modelWithPre('no-such-pre'), '--json']);
  t.equal(JSON.parse(json.stdout).loadable, false, '--json: not loadable');
  const good = run(['inspect', modelWithPre('smollm')]);
  t.match(good.stdout, /^tokenizer:\s+byte-level BPE, pre-tokenizer smollm, 320 tokens$/m);
  t.match(good.stdout, /^loading:\s+OK/m);
});

t.test('doctor fails the model check with the tokenizer error and a fix', async (t) => {
  const c = await checkModel(modelWithPre('no-such-pre'), {});
  t.equal(c.status, 'fail');
  t.match(c.detail, /^E_MODEL_UNSUPPORTED: .*tokenizer\.ggml\.pre = "no-such-pre"/);
  t.match(c.fix, /edgellm inspect FILE/);
});

t.test('serve refuses to start (exit 2, one line) instead of reporting ready and failing every request', async (t) => {
  const env: NodeJS.ProcessEnv = { ...process.env, EDGELLM_BROKER_EMBEDDED_PORT: String(await freePort()) };
  for (const k of Object.keys(env)) if (k.startsWith('EDGELLM_') && k !== 'EDGELLM_BROKER_EMBEDDED_PORT') delete env[k];
  const r = spawnSync(process.execPath, [cli, 'serve', '--model', modelWithPre('no-such-pre'), '--state-dir', join(dir, 'state')], {
    encoding: 'utf8',
    env,
    cwd: root,
    timeout: 60_000,
  });
  t.equal(r.status, 2, r.stderr);
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  t.match(r.stderr, /^edgellm: E_MODEL_UNSUPPORTED: .*tokenizer\.ggml\.pre = "no-such-pre"/);
});
