// "A device that subscribes at QoS 2 gets each final reply exactly once, across kill -9": 60 requests
// in flight, the daemon SIGKILLed three times while final replies are going out (not only between
// them), started again each time. Two plain MQTT.js subscribers read the replies, one at QoS 2 and one
// at QoS 1: neither misses a reply; the QoS 2 one never gets one twice (the daemon's QoS 2 packets
// survive in SQLite and their handshakes are finished after the restart; mosquitto keeps the session).
import t from 'tap';
import mqtt, { type MqttClient } from 'mqtt';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Broker, findMosquitto } from '../helpers/broker.js';
import { daemonConfig, DaemonProcess } from '../helpers/daemon.js';
import { requires } from '../helpers/serve.js';

const bin = findMosquitto();
const need = requires('exactly-once.test', bin !== undefined, 'mosquitto is not installed (apt-get install mosquitto): the exactly-once tests did not run');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A subscriber that records every final reply's raw payload, by id. */
class Subscriber {
  readonly finals = new Map<string, string[]>();
  private constructor(readonly client: MqttClient) {
    client.on('message', (_topic, payload) => {
      const body = JSON.parse(payload.toString()) as { id: string; type: string };
      if (body.type === 'done' || body.type === 'error') this.finals.set(body.id, [...(this.finals.get(body.id) ?? []), payload.toString()]);
    });
  }

  static async connect(url: string, clientId: string, filter: string, qos: 1 | 2): Promise<Subscriber> {
    const client = await mqtt.connectAsync(url, { protocolVersion: 5, clientId, clean: false, properties: { sessionExpiryInterval: 600 } });
    await client.subscribeAsync(filter, { qos });
    return new Subscriber(client);
  }

  get duplicates(): number {
    return [...this.finals.values()].reduce((n, copies) => n + copies.length - 1, 0);
  }
}

t.test('kill -9 three times with 60 requests in flight: QoS 2 gets every final reply once, QoS 1 gets every one', need, async (t) => {
  const broker = await Broker.start(bin!);
  t.teardown(() => broker.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-exactly-once-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const prefix = 'once';
  // 8 slots, 15 ms a word, ~9 words a reply: the finals come in waves of up to 8, ~140 ms apart.
  const config = daemonConfig({ broker: { url: broker.url }, prefix, node_id: 'once', state_dir: join(dir, 'state'), batch: { max: 8 } });
  const qos2 = await Subscriber.connect(broker.url, 'sub-qos2', `${prefix}/response/#`, 2);
  const qos1 = await Subscriber.connect(broker.url, 'sub-qos1', `${prefix}/response/#`, 1);
  const requester = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: 'requester', clean: false, properties: { sessionExpiryInterval: 600 } });
  t.teardown(() => Promise.all([qos2.client.endAsync(true), qos1.client.endAsync(true), requester.endAsync(true)]));

  const start = async () => {
    const d = await DaemonProcess.start(config, 15);
    t.teardown(() => d.kill('SIGKILL'));
    return d;
  };
  const answered = () => qos2.finals.size;
  const killAt = async (d: DaemonProcess, n: number) => {
    const until = Date.now() + 30_000;
    while (answered() < n) {
      if (Date.now() > until) throw new Error(`only ${answered()} of ${n} answered:\n${d.output.slice(-3000)}`);
      await sleep(1);
    }
    await d.kill('SIGKILL'); // at once: in the middle of a wave of final replies
  };

  const accepted: string[] = [];
  const ids = Array.from({ length: 60 }, (_, i) => `r-${i}`);
  let daemon = await start();
  await Promise.all(
    ids.map(async (id, i) => {
      await requester.publishAsync(`${prefix}/request/press-${i % 4}`, JSON.stringify({ id, prompt: `part ${i} needs a check now`, temperature: 0.7 }), { qos: 1 });
      accepted.push(id);
    }),
  );
  const perKill: string[] = [];
  const finished = (d: DaemonProcess) => Number(/finishing (\d+) QoS 2 handshake/.exec(d.output)?.[1] ?? 0);
  for (const n of [10, 26, 42]) {
    const before = { q2: qos2.duplicates, q1: qos1.duplicates };
    await killAt(daemon, n);
    daemon = await start();
    await sleep(300); // the restarted daemon finishes the interrupted handshakes first
    perKill.push(`kill at ${n} answered: ${finished(daemon)} handshakes finished after it, +${qos2.duplicates - before.q2} duplicates at QoS 2, +${qos1.duplicates - before.q1} at QoS 1`);
  }
  const until = Date.now() + 30_000;
  while ((qos2.finals.size < 60 || qos1.finals.size < 60) && Date.now() < until) await sleep(20);
  await sleep(1000); // late duplicates would arrive now

  t.equal(accepted.length, 60, '60 requests got their PUBACK');
  t.same(ids.filter((id) => !qos2.finals.has(id)), [], 'QoS 2: none lost');
  t.same(ids.filter((id) => !qos1.finals.has(id)), [], 'QoS 1: none lost');
  for (const [id, copies] of qos1.finals) {
    for (const c of copies.slice(1)) t.equal(c, copies[0], `${id}: a QoS 1 duplicate is byte-identical`);
  }
  for (const [id, copies] of qos2.finals) t.equal(copies[0], qos1.finals.get(id)?.[0], `${id}: both subscribers got the same reply`);
  t.comment(`exactly-once figures: ${perKill.join('; ')}; in all ${qos2.duplicates} duplicates at QoS 2, ${qos1.duplicates} at QoS 1`);
  t.equal(qos2.duplicates, 0, 'QoS 2: no final reply twice');
  await daemon.kill('SIGTERM');
});
