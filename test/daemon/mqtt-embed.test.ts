// MQTT embedding requests (op "embed"): the daemon in this process with the real engine on a random
// bert (an embedding model) and a random llama (a generative one), a real mosquitto. The reply is one
// `embeddings` message with the engine's vectors; bad requests are refused field by field.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localModelOpener } from '../../src/daemon/local-model.js';
import { Service } from '../../src/daemon/service.js';
import { loadModel } from '../../src/engine/model.js';
import { createLogger } from '../../src/log.js';
import { writeEncoder } from '../fixtures/random-encoder.js';
import { writeModel } from '../fixtures/random-model.js';
import { Broker, findMosquitto } from '../helpers/broker.js';
import { daemonConfig } from '../helpers/daemon.js';
import { Device } from '../helpers/device.js';
import { requires } from '../helpers/serve.js';

const mosquitto = findMosquitto();
const needs = requires('mqtt-embed.test', mosquitto !== undefined, 'the daemon needs mosquitto (apt-get install mosquitto)');

const dir = mkdtempSync(join(tmpdir(), 'edgellm-mqtt-embed-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const encoder = writeEncoder({ name: 'mqtt bert', arch: 'bert', nEmbd: 32, nLayer: 1, nHead: 2, nFf: 64, contextLength: 16, pooling: 1 }, dir, 300);
const { path: decoder } = writeModel(
  { name: 'mqtt llama', arch: 'llama', nVocab: 300, nEmbd: 32, nLayer: 1, nHead: 2, nHeadKv: 2, headDim: 16, nFf: 64 },
  dir,
  { vocab: true },
);

let node: Promise<{ device: Device }> | undefined;
function start(): Promise<{ device: Device }> {
  node ??= (async () => {
    const broker = await Broker.start(mosquitto!);
    t.teardown(() => broker.destroy());
    const config = daemonConfig({
      broker: { url: broker.url },
      prefix: 'emb',
      node_id: 'embedder',
      state_dir: join(dir, 'state'),
      model: encoder,
      models: [decoder],
      engine: { threads: 1 },
    });
    const service = new Service(config, localModelOpener(config), createLogger('error'));
    await service.start();
    t.teardown(() => service.stop());
    const device = await Device.connect(broker.url, 'emb-sensor', ['emb/response/#']);
    t.teardown(() => device.close());
    return { device };
  })();
  return node;
}

async function engineVector(text: string): Promise<number[]> {
  const m = await loadModel(encoder, { threads: 1 });
  try {
    return Array.from(await m.embed(text));
  } finally {
    m.close();
  }
}

t.test('op "embed": one embeddings reply with a unit vector per input, in order, and the tokens read', needs, async (t) => {
  const { device } = await start();
  await device.publish('emb/request/sensor-1', { id: 'e1', op: 'embed', input: ['the cat', 'hello world!'] });
  const reply = (await device.final('e1', 30_000)).body as Record<string, unknown> & { embeddings: number[][] };
  t.match(reply, { id: 'e1', type: 'embeddings', model: 'mqtt_bert_11', node: 'embedder', usage: { prompt_tokens: 9 }, timings: { queue_ms: Number, total_ms: Number } });
  t.equal(reply.embeddings.length, 2);
  t.same(reply.embeddings[0], await engineVector('the cat'));
  t.same(reply.embeddings[1], await engineVector('hello world!'));

  await device.publish('emb/request/sensor-1', { id: 'e2', op: 'embed', input: 'the cat' });
  const one = (await device.final('e2', 30_000)).body as { embeddings: number[][] };
  t.same(one.embeddings, [await engineVector('the cat')], 'a single text is a list of one vector');
});

t.test('bad embedding requests get an error reply naming the field or the cause', needs, async (t) => {
  const { device } = await start();
  const cases: Array<[Record<string, unknown>, string, RegExp]> = [
    [{ op: 'embed' }, 'E_BAD_REQUEST', /needs "input"/],
    [{ op: 'embed', input: '' }, 'E_BAD_REQUEST', /input.*must not be empty/],
    [{ op: 'embed', input: [] }, 'E_BAD_REQUEST', /at least one text/],
    [{ op: 'embed', input: 'x', prompt: 'x' }, 'E_BAD_REQUEST', /prompt.*not read by an embedding request/],
    [{ op: 'embed', input: 'x', route: 'cloud' }, 'E_BAD_REQUEST', /embeddings are computed on this node/],
    [{ input: 'x', prompt: 'x' }, 'E_BAD_REQUEST', /add "op": "embed"/],
    [{ op: 'summarize', prompt: 'x' }, 'E_BAD_REQUEST', /"generate" or "embed"/],
    [{ op: 'embed', input: 'the '.repeat(20) }, 'E_INPUT_TOO_LONG', /an input is 22 tokens, more than the 16 mqtt_bert_11 reads at once/],
    [{ op: 'embed', input: 'x', model: 'mqtt_llama_7' }, 'E_NOT_EMBEDDING_MODEL', /generative model/],
    [{ prompt: 'hello' }, 'E_NOT_GENERATIVE', /embedding model/],
  ];
  for (const [i, [body, code, message]] of cases.entries()) {
    await device.publish('emb/request/sensor-2', { id: `bad${i}`, ...body });
    const r = (await device.final(`bad${i}`, 30_000)).body as { type: string; error?: { code: string; message: string } };
    t.equal(r.type, 'error', JSON.stringify(body));
    t.equal(r.error?.code, code, JSON.stringify(body));
    t.match(r.error?.message, message, JSON.stringify(body));
  }
});
