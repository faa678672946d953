// The answer cache keys on the model file's identity, not its name: with the real engine, a file replaced
// by another model under the same path is not answered from the old model's cache after a restart, and
// the same file is.
import t from 'tap';
import { copyFileSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configSchema } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { localModelOpener } from '../../src/daemon/local-model.js';
import { Service } from '../../src/daemon/service.js';
import { modelFingerprint } from '../../src/engine/fingerprint.js';
import { Broker, findMosquitto } from '../helpers/broker.js';
import { Device } from '../helpers/device.js';
import { requires } from '../helpers/serve.js';
import { writeModel, type Spec } from '../fixtures/random-model.js';

const bin = findMosquitto();
const need = requires('cache-identity.test', bin !== undefined, 'mosquitto is not installed (apt-get install mosquitto): the cache identity tests did not run');

/** Two models of one shape: same metadata, same tensor table, same size; only the weights differ. */
const SPEC: Spec = { name: 'press', arch: 'llama', nVocab: 320, nEmbd: 64, nLayer: 2, nHead: 4, nHeadKv: 2, headDim: 16, nFf: 96, logitScale: 3, contextLength: 512 };

t.test('fingerprints: the same bytes give the same id, other weights in the same shape another', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-fingerprint-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const a = writeModel(SPEC, dir, { vocab: true, seed: 7 }).path;
  const b = writeModel(SPEC, dir, { vocab: true, seed: 8 }).path;
  const copy = join(dir, 'copy.gguf');
  copyFileSync(a, copy);
  t.equal(statSync(a).size, statSync(b).size, 'same size');
  const [fa, fb, fc] = await Promise.all([modelFingerprint(a), modelFingerprint(b), modelFingerprint(copy)]);
  t.match(fa.id, /^gguf1:[0-9a-f]{64}$/);
  t.equal(fc.id, fa.id, 'a copy is the same model');
  t.not(fb.id, fa.id, 'other weights are another model');
  await t.rejects(modelFingerprint(join(dir, 'missing.gguf')), { code: 'E_MODEL_NOT_FOUND' });
});

t.test('fingerprints of a file too large to hash whole: windows of the weights still tell models apart', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-fingerprint-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // ~12 MiB of F32 weights: over the windows' 4 MiB, so with wholeDataBytes 0 only windows are read.
  const big: Spec = { ...SPEC, name: 'big', nVocab: 2048, nEmbd: 256, nHead: 8, nHeadKv: 4, headDim: 32, nFf: 1024 };
  const a = writeModel(big, dir, { vocab: true, seed: 7 }).path;
  const b = writeModel(big, dir, { vocab: true, seed: 8 }).path;
  t.ok(statSync(a).size > 8 * 2 ** 20, `${statSync(a).size} bytes`);
  const copy = join(dir, 'copy.gguf');
  copyFileSync(a, copy);
  const sampled = (p: string) => modelFingerprint(p, { wholeDataBytes: 0 }).then((f) => f.id);
  t.equal(await sampled(copy), await sampled(a), 'a copy is the same model');
  t.not(await sampled(b), await sampled(a), 'other weights are another model');
  t.not(await sampled(a), (await modelFingerprint(a)).id, 'sampled and whole hashes are not confused with each other');
});

t.test('a model file replaced under the same name is not answered from the old cache; the same file is', need, async (t) => {
  const broker = await Broker.start(bin!);
  t.teardown(() => broker.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-cache-identity-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const made = join(dir, 'made');
  mkdirSync(made);
  const modelA = writeModel(SPEC, made, { vocab: true, seed: 7 }).path;
  const modelB = writeModel(SPEC, made, { vocab: true, seed: 8 }).path;
  const served = join(dir, 'models', 'press.gguf');
  mkdirSync(join(dir, 'models'));
  /** How an admin replaces a model: a complete file renamed over the old one. */
  const install = (from: string) => {
    copyFileSync(from, `${served}.new`);
    renameSync(`${served}.new`, served);
  };
  const config = configSchema.parse({
    broker: { url: broker.url },
    prefix: 'ci',
    node_id: 'ci',
    state_dir: join(dir, 'state'),
    model: served,
    engine: { threads: 1, context_size: 64 },
    log: { level: 'error' },
  });
  const device = await Device.connect(broker.url, 'cache-identity-device', ['ci/response/#']);
  t.teardown(() => device.close());

  let service: Service | undefined;
  t.teardown(() => service?.stop());
  const restart = async () => {
    await service?.stop();
    service = new Service(config, localModelOpener(config), createLogger('error'));
    await service.start();
  };
  let n = 0;
  /** The same greedy request each time, under a new id. */
  const ask = async () => {
    const id = `q${n++}`;
    await device.publish('ci/request/press-7', { id, prompt: 'spindle temperature', max_tokens: 8, temperature: 0 });
    return (await device.final(id, 20_000)).body;
  };

  install(modelA);
  await restart();
  const first = await ask();
  t.match(first, { type: 'done', cached: false, model: 'press', usage: { completion_tokens: Number } }, 'model A: generated');
  t.match(await ask(), { type: 'done', cached: true, text: first.text }, 'model A again: from the cache');

  await restart();
  t.match(await ask(), { type: 'done', cached: true, text: first.text }, 'the same file after a restart: from the cache');

  install(modelB);
  await restart();
  const second = await ask();
  t.match(second, { type: 'done', cached: false, model: 'press' }, 'another model under the same name after a restart: generated, not A\'s answer');
  t.not(second.text, first.text, 'and its answer is its own');
  t.match(await ask(), { type: 'done', cached: true, text: second.text }, 'model B again: from the cache, B\'s answer');

  install(modelA);
  await restart();
  t.match(await ask(), { type: 'done', cached: true, text: first.text }, 'model A back: A\'s cached answer again');

  // The real engine refuses a prompt + max_tokens beyond engine.context_size (64) with its own code.
  await device.publish('ci/request/press-7', { id: 'too-long', prompt: 'spindle temperature '.repeat(8), max_tokens: 8 });
  t.match((await device.final('too-long', 20_000)).body.error, { code: 'E_PROMPT_TOO_LONG', message: /context holds 64.*engine\.context_size/ });
});
