// A device that speaks MQTT 3.1.1 (no Response Topic, no Correlation Data): replies go to the request's
// reply_to, or to <prefix>/response/<device-id>; streams and errors work the same.
import t from 'tap';
import mqtt from 'mqtt';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Broker, findMosquitto } from '../helpers/broker.js';
import { daemonConfig, startDaemon } from '../helpers/daemon.js';
import { sleep } from '../helpers/device.js';
import { requires } from '../helpers/serve.js';

const bin = findMosquitto();
const need = requires('mqtt311.test', bin !== undefined, 'mosquitto is not installed (apt-get install mosquitto): the MQTT 3.1.1 tests did not run');

interface Got {
  topic: string;
  body: Record<string, unknown>;
  hasProperties: boolean;
}

t.test('an MQTT 3.1.1 device: reply_to, the default response topic, streaming and errors', need, async (t) => {
  const broker = await Broker.start(bin!);
  t.teardown(() => broker.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-mqtt311-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const daemon = await startDaemon(daemonConfig({ broker: { url: broker.url }, prefix: 'v4', node_id: 'v4node', state_dir: join(dir, 'state') }), 5);
  t.teardown(() => daemon.service.stop());

  const client = await mqtt.connectAsync(broker.url, { protocolVersion: 4, clientId: 'press-311', clean: false, reconnectPeriod: 200 });
  t.teardown(() => client.endAsync(true));
  t.equal(client.options.protocolVersion, 4, 'the device speaks MQTT 3.1.1');
  const got: Got[] = [];
  client.on('message', (topic, payload, packet) => {
    got.push({ topic, body: JSON.parse(payload.toString('utf8')) as Record<string, unknown>, hasProperties: packet.properties !== undefined });
  });
  await client.subscribeAsync(['v4/replies/press-311', 'v4/response/press-311'], { qos: 1 });
  const ask = (body: object | string) => client.publishAsync('v4/request/press-311', typeof body === 'string' ? body : JSON.stringify(body), { qos: 1 });
  const final = async (id: string | null, topic: string) => {
    const until = Date.now() + 10_000;
    for (;;) {
      const hit = got.find((g) => g.topic === topic && g.body.id === id && (g.body.type === 'done' || g.body.type === 'error'));
      if (hit) return hit;
      if (Date.now() > until) throw new Error(`no final reply to ${id} on ${topic}; got ${JSON.stringify(got)}`);
      await sleep(20);
    }
  };

  await ask({ id: 'with-reply-to', prompt: 'spindle at 80 C', temperature: 0, reply_to: 'v4/replies/press-311' });
  const a = await final('with-reply-to', 'v4/replies/press-311');
  t.match(a.body, { type: 'done', text: 'you said: spindle at 80 C', finish_reason: 'stop', cached: false, model: 'fake', node: 'v4node' });
  t.notOk(a.hasProperties, 'a 3.1.1 subscriber gets no MQTT 5 properties');

  await ask({ id: 'no-reply-to', prompt: 'coolant low', seed: 3 });
  t.match((await final('no-reply-to', 'v4/response/press-311')).body, { type: 'done', text: 'you said: coolant low' }, 'to <prefix>/response/<device-id>');

  await ask({ id: 'streamed', prompt: 'one two three four', stream: true, seed: 1, reply_to: 'v4/replies/press-311' });
  const s = await final('streamed', 'v4/replies/press-311');
  const mine = got.filter((g) => g.body.id === 'streamed');
  const chunks = mine.filter((g) => g.body.type === 'chunk');
  t.same(chunks.map((c) => c.body.seq), [0, 1, 2, 3, 4, 5], 'every chunk, in order');
  t.ok(chunks.every((c) => c.topic === 'v4/replies/press-311'), 'chunks go to reply_to too');
  t.equal(chunks.map((c) => c.body.text).join(''), s.body.text, 'the chunks make the whole text');
  t.equal(mine[mine.length - 1], s, 'done comes last');

  await ask({ id: 'bad', prompt: 'x', max_tokens: 0, reply_to: 'v4/replies/press-311' });
  t.match((await final('bad', 'v4/replies/press-311')).body.error, { code: 'E_BAD_REQUEST', message: /field "max_tokens" must be a whole number >= 1/ });
  await ask('{"prompt": "no id", "reply_to": "v4/replies/press-311"}');
  t.match((await final(null, 'v4/replies/press-311')).body.error, { code: 'E_BAD_REQUEST', message: /"id" is missing/ }, 'no id: an error to reply_to, id null');
  await ask('not json');
  t.match((await final(null, 'v4/response/press-311')).body.error, { code: 'E_BAD_REQUEST', message: /not JSON/ }, 'not JSON: an error to the default topic');

  await ask({ id: 'with-reply-to', prompt: 'spindle at 80 C', temperature: 0, reply_to: 'v4/replies/press-311' });
  await sleep(300);
  const repeats = got.filter((g) => g.body.id === 'with-reply-to' && g.body.type === 'done');
  t.equal(repeats.length, 2, 'a repeated id gets the stored answer again');
  t.same(repeats[1]!.body, repeats[0]!.body);
  t.equal(daemon.models[0]!.calls, 3, 'the engine ran for the three good requests only');
});
