// The daemon's outgoing QoS 2 packets in SQLite (MQTT.js's outgoingStore): a stored PUBLISH takes over
// its outbox row, which then leaves with the completed handshake, or comes back to the outbox when the
// broker refused it; the packets survive a reopen byte for byte, and are sent again marked DUP.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Packet } from 'mqtt';
import { Store } from '../../src/store/index.js';
import { DurableOutgoingStore } from '../../src/transport/mqtt/packet-store.js';

function open(t: { teardown(fn: () => void): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-packets-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const stores: Store[] = [];
  t.teardown(() => stores.forEach((s) => s.close()));
  return () => {
    const store = Store.open(dir, { cacheEntries: 1 });
    stores.push(store);
    return { store, packets: new DurableOutgoingStore(store.packets) };
  };
}

const publish = (messageId: number, payload: string, qos: 1 | 2 = 2): Packet => ({
  cmd: 'publish',
  topic: 'r/d1',
  payload,
  qos,
  retain: false,
  dup: false,
  messageId,
  properties: { correlationData: Buffer.from([0, 1, 2, 255]), contentType: 'application/json' },
});
const put = (s: DurableOutgoingStore, p: Packet) => new Promise<void>((resolve, reject) => s.put(p, (err) => (err ? reject(err) : resolve())));
const del = (s: DurableOutgoingStore, messageId: number) => new Promise<Packet | undefined>((resolve) => s.del({ messageId }, (_err, p) => resolve(p)));
async function streamed(s: DurableOutgoingStore): Promise<Packet[]> {
  const out: Packet[] = [];
  for await (const p of s.createStream() as unknown as AsyncIterable<Packet>) out.push(p);
  return out;
}

t.test('a stored QoS 2 PUBLISH takes its outbox row out of pending(); PUBCOMP after PUBREL deletes both', async (t) => {
  const { store, packets } = open(t)();
  const a = store.outbox.add('r/d1', '{"id":"a"}', null);
  store.outbox.add('r/d1', '{"id":"b"}', null);
  await put(packets, publish(7, '{"id":"a"}'));
  t.same(store.outbox.pending().map((m) => m.payload), ['{"id":"b"}'], 'a is MQTT.js\'s now: the outbox does not publish it again');
  await put(packets, { cmd: 'pubrel', messageId: 7 } as Packet);
  t.equal(store.outbox.size(), 2, 'PUBREC: the row stays until the handshake completes');
  t.match(await del(packets, 7), { cmd: 'pubrel', messageId: 7 });
  t.equal(store.outbox.size(), 1, 'PUBCOMP: the packet and its row went together');
  store.outbox.acknowledged(a.seq); // MQTT.js's callback afterwards: nothing left to do
  t.same(store.outbox.pending().map((m) => m.payload), ['{"id":"b"}']);
});

t.test('a PUBLISH the broker refused (deleted before PUBREL) gives its row back to the outbox', async (t) => {
  const { store, packets } = open(t)();
  store.outbox.add('r/d1', '{"id":"a"}', null);
  await put(packets, publish(3, '{"id":"a"}'));
  t.same(store.outbox.pending(), []);
  await del(packets, 3);
  t.same(store.outbox.pending().map((m) => m.payload), ['{"id":"a"}'], 'published again on the next connect');
});

t.test('QoS 2 packets survive a reopen byte for byte and come back marked DUP; QoS 1 packets do not', async (t) => {
  const reopen = open(t);
  const first = reopen();
  first.store.outbox.add('r/d1', '{"id":"a"}', null);
  await put(first.packets, publish(1, '{"id":"a"}'));
  await put(first.packets, publish(2, '{"id":"chunk"}', 1));
  await put(first.packets, publish(4, '{"id":"b"}'));
  await put(first.packets, { cmd: 'pubrel', messageId: 4 } as Packet);
  t.equal((await streamed(first.packets)).length, 3, 'in this process: both QoS 2 packets and the QoS 1 one');
  first.store.close();
  const { packets } = reopen();
  const again = await streamed(packets);
  t.same(again.map((p) => [p.cmd, p.messageId]), [['publish', 1], ['pubrel', 4]], 'after a restart: the QoS 2 ones');
  const p = again[0] as Packet & { payload: string; dup: boolean; properties: { correlationData: Buffer } };
  t.equal(p.payload, '{"id":"a"}');
  t.ok(p.dup, 'a PUBLISH sent again carries DUP');
  t.ok(Buffer.isBuffer(p.properties.correlationData) && p.properties.correlationData.equals(Buffer.from([0, 1, 2, 255])), 'correlation data is a Buffer again, same bytes');
});
