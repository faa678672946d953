// LoRA adapters through the whole daemon on stories260K (../shared/models) with a random adapter and
// a real mosquitto: config adapters.MODEL, a request's `adapter` on MQTT and the OpenAI endpoint
// (model "MODEL+ADAPTER" or the adapter field), the reply and the audit saying which adapter answered,
// the answer cache keeping the adapter's answers apart from the base model's, and E_UNKNOWN_ADAPTER.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkPolicyReferences } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { Service } from '../../src/daemon/service.js';
import { localModelOpener, openLocalModel } from '../../src/daemon/local-model.js';
import type { RequestAudit } from '../../src/policy/audit.js';
import type { SqliteAuditLog } from '../../src/store/audit.js';
import { writeModel, type Spec } from '../fixtures/random-model.js';
import { writeLora, writeLoraFor } from '../fixtures/random-lora.js';
import { Broker, freePort, mosquittoFor } from '../helpers/broker.js';
import { daemonConfig } from '../helpers/daemon.js';
import { Device } from '../helpers/device.js';
import { hasStories, requires, stories } from '../helpers/serve.js';

const bin = mosquittoFor('the LoRA daemon tests');
const needs = requires('daemon/lora.test', bin !== undefined && hasStories(), `the LoRA daemon tests need mosquitto and ${stories}`);

const work = mkdtempSync(join(tmpdir(), 'edgellm-lora-daemon-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

t.test('config adapters are checked against the local models', async (t) => {
  const config = daemonConfig({ model: '/m/base.gguf', adapters: { other: [{ name: 'x', path: '/a.gguf' }] } });
  t.throws(() => checkPolicyReferences(config), { code: 'E_CONFIG', message: /adapters\.other: "other" is not a local model \(base\)/ });
  const twice = daemonConfig({ model: '/m/base.gguf', adapters: { base: [{ name: 'x', path: '/a.gguf' }, { name: 'x', path: '/b.gguf' }] } });
  t.throws(() => checkPolicyReferences(twice), { code: 'E_CONFIG', message: /adapters\.base\[1\]\.name: "x" is listed twice/ });
  t.throws(() => daemonConfig({ adapters: { base: [{ name: 'a+b', path: '/a.gguf' }] } }), /one topic level/);
  t.equal(daemonConfig({ adapters: { base: [{ name: 'x', path: '/a.gguf' }] } }).adapters.base![0]!.scale, 1, 'scale defaults to 1');
});

t.test('an adapter that does not fit its model stops the start with E_CONFIG naming the key and the tensor', async (t) => {
  const spec: Spec = { name: 'lora daemon base', arch: 'llama', nVocab: 320, nEmbd: 64, nLayer: 1, nHead: 4, nHeadKv: 2, headDim: 16, nFf: 96 };
  const { path } = writeModel(spec, work, { vocab: true });
  const qwen = writeLora(spec, work, { rank: 4, alpha: 0, seed: 2, arch: 'qwen2' });
  const wide = writeLora({ ...spec, name: 'wide', nFf: 128 }, work, { rank: 4, alpha: 0, seed: 3, targets: (n) => n === 'blk.0.ffn_down.weight' });
  await t.rejects(openLocalModel(path, { threads: 1, contextSize: 32 }, [{ name: 'q', path: qwen, scale: 1 }]), {
    code: 'E_CONFIG',
    message: /^adapters\.lora_daemon_base_7\[0\] \(q\): E_MODEL_UNSUPPORTED: .*architecture 'qwen2' but the model is 'llama'/,
  });
  await t.rejects(openLocalModel(path, { threads: 1, contextSize: 32 }, [{ name: 'w', path: wide, scale: 1 }]), {
    code: 'E_CONFIG',
    message: /\(w\): E_MODEL_UNSUPPORTED: .*'blk\.0\.ffn_down\.weight' is \[96, 64\] in the base model/,
  });
});

t.test('adapters through MQTT and the OpenAI endpoint', needs, async (t) => {
  const adapter = writeLoraFor(stories, work, { rank: 8, alpha: 16, scale: 0.2, seed: 5 });
  const broker = await Broker.start(bin!);
  t.teardown(() => broker.destroy());
  const openaiPort = await freePort();
  const config = daemonConfig({
    model: stories,
    adapters: { stories260K: [{ name: 'tone', path: adapter, scale: 1 }] },
    broker: { url: broker.url },
    prefix: 'lora',
    node_id: 'lora1',
    state_dir: join(work, 'state'),
    engine: { threads: 1, context_size: 256 },
    openai: { port: openaiPort },
  });
  const service = new Service(config, localModelOpener(config), createLogger('error'));
  await service.start();
  t.teardown(() => service.stop());
  const device = await Device.connect(broker.url, 'lora-device', ['lora/response/#']);
  t.teardown(() => device.close());
  const ask = async (id: string, fields: object) => {
    await device.publish('lora/request/press', { id, prompt: 'Once upon a time', max_tokens: 16, temperature: 0, ...fields });
    return (await device.final(id)).body as { type: string; text: string; cached: boolean; adapter?: string; model: string; error?: { code: string; message: string } };
  };

  t.test('MQTT: the adapter answers, the reply names it, and the cache keeps its answers apart', async (t) => {
    const base = await ask('base', {});
    const tone = await ask('tone', { adapter: 'tone' });
    t.equal(base.type, 'done');
    t.equal(tone.type, 'done');
    t.equal(base.adapter, undefined, 'no adapter asked: none named');
    t.equal(tone.adapter, 'tone', 'the reply names the adapter that answered');
    t.equal(tone.cached, false, 'not the base model\'s cached answer');
    t.not(tone.text, base.text, 'the adapter changes the greedy text');
    const again = await ask('tone2', { adapter: 'tone' });
    t.match(again, { cached: true, text: tone.text, adapter: 'tone' }, 'a repeat is the adapter\'s cached answer');
    const audit = (service.audit as SqliteAuditLog).query({ type: 'request' }).map((e) => e.record as RequestAudit);
    t.match(audit.find((r) => r.id === 'tone'), { adapter: 'tone', outcome: 'ok' }, 'the audit record names the adapter');
  });

  t.test('MQTT: an unknown adapter is E_UNKNOWN_ADAPTER naming the ones there are', async (t) => {
    const r = await ask('bad', { adapter: 'poetry' });
    t.equal(r.type, 'error');
    t.equal(r.error?.code, 'E_UNKNOWN_ADAPTER');
    t.match(r.error?.message, /has no adapter "poetry"; its adapters are tone/);
  });

  t.test('OpenAI: model "MODEL+ADAPTER" or the adapter field, and the reply names the pair', async (t) => {
    const post = async (body: object) => {
      const res = await fetch(`http://127.0.0.1:${openaiPort}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 12, temperature: 0, ...body }),
      });
      return { status: res.status, body: (await res.json()) as { model?: string; choices?: Array<{ message: { content: string } }>; error?: { code: string; param: string } } };
    };
    const plus = await post({ model: 'stories260K+tone' });
    const field = await post({ model: 'stories260K', adapter: 'tone' });
    const base = await post({ model: 'stories260K' });
    t.equal(plus.status, 200);
    t.equal(plus.body.model, 'stories260K+tone');
    t.equal(field.body.model, 'stories260K+tone');
    t.equal(plus.body.choices![0]!.message.content, field.body.choices![0]!.message.content, 'both spellings run the same adapter');
    t.not(plus.body.choices![0]!.message.content, base.body.choices![0]!.message.content, 'and it is not the base model');
    const unknown = await post({ model: 'stories260K+poetry' });
    t.equal(unknown.status, 404);
    t.match(unknown.body.error, { code: 'adapter_not_found', param: 'adapter' });
  });
});
