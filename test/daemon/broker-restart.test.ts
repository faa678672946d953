// "Restart the broker during generation: the daemon reconnects, resubscribes and loses nothing." Requests
// running, queued, published while the broker is down (the device's client holds them) and after it is
// back all get exactly one final reply, each generated once; a broker that lost every session gets the
// daemon's subscriptions and presence back.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Broker, findMosquitto } from '../helpers/broker.js';
import { daemonConfig, startDaemon } from '../helpers/daemon.js';
import { Device, sleep, type Reply } from '../helpers/device.js';
import { requires } from '../helpers/serve.js';
import type { TapTest } from '../fixtures/paths.js';

const bin = findMosquitto();
const need = requires('broker-restart.test', bin !== undefined, 'mosquitto is not installed (apt-get install mosquitto): the broker restart tests did not run');

const isFinal = (r: Reply) => r.body.type === 'done' || r.body.type === 'error';

async function setup(t: TapTest, name: string, delayMs: number) {
  const broker = await Broker.start(bin!);
  t.teardown(() => broker.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-broker-restart-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const config = daemonConfig({ broker: { url: broker.url }, prefix: name, node_id: name, state_dir: join(dir, 'state'), batch: { max: 2 } });
  const daemon = await startDaemon(config, delayMs);
  t.teardown(() => daemon.service.stop());
  // A persistent session (clean start off, 600 s expiry): replies published while it is away are kept for it.
  const device = await Device.connect(broker.url, `${name}-device`, [`${name}/response/#`, `${name}/status/#`]);
  t.teardown(() => device.close());
  const ask = (id: string, extra: object = {}) => device.publish(`${name}/request/press-1`, { id, prompt: `check ${id} now`, ...extra });
  const finals = () => device.replies.filter(isFinal);
  const waitFinals = async (ids: string[], timeoutMs: number) => {
    const until = Date.now() + timeoutMs;
    while (ids.some((id) => !finals().some((r) => r.body.id === id))) {
      if (Date.now() > until) {
        const missing = ids.filter((id) => !finals().some((r) => r.body.id === id));
        throw new Error(`no final reply for ${missing.join(', ')}\ndaemon log:\n${daemon.logs.join('').slice(-4000)}\nbroker log:\n${broker.log.slice(-2000)}`);
      }
      await sleep(20);
    }
  };
  return { broker, daemon, device, ask, finals, waitFinals, model: () => daemon.models[0]! };
}

t.test('a broker restart during generation loses nothing: running, queued, sent while down, sent after', need, async (t) => {
  const { broker, device, ask, finals, waitFinals, model } = await setup(t, 'br1', 60);
  // 2 slots, 60 ms a word, 5 words a reply: 8 requests keep the node busy for ~1.2 s.
  const before = Array.from({ length: 8 }, (_, i) => `before-${i}`);
  await Promise.all(before.map((id, i) => ask(id, i % 2 === 0 ? { stream: true } : {})));
  await device.waitFor((r) => r.body.type === 'chunk', 5000, 'a chunk: generation has started');
  await broker.stop(); // SIGTERM: mosquitto saves its sessions and exits
  // The device's client queues these (QoS 1) and sends them once it is connected again.
  const whileDown = Array.from({ length: 4 }, (_, i) => `down-${i}`);
  const sentWhileDown = Promise.all(whileDown.map((id) => ask(id)));
  await sleep(800); // generations finish meanwhile: their final replies wait in the outbox
  await broker.start();
  await sentWhileDown;
  const after = Array.from({ length: 4 }, (_, i) => `after-${i}`);
  await Promise.all(after.map((id) => ask(id, { stream: true })));
  const all = [...before, ...whileDown, ...after];
  await waitFinals(all, 20_000);
  await sleep(500); // late duplicates would show up now

  for (const id of all) {
    const mine = finals().filter((r) => r.body.id === id);
    t.equal(mine.length, 1, `${id}: exactly one final reply`);
    t.match(mine[0]!.body, { type: 'done', finish_reason: 'stop', text: new RegExp(`^you said: check ${id} now #\\w+$`) }, `${id}: the whole answer`);
  }
  t.equal(model().calls, all.length, 'each request was generated once: none lost and run again, none run twice');
  for (const id of after) {
    const chunks = device.for(id).filter((r) => r.body.type === 'chunk');
    t.same(chunks.map((c) => c.body.seq), chunks.map((_, k) => k), `${id}: streamed in order after the restart`);
    t.ok(chunks.length > 0, `${id}: chunks flow again after the restart`);
  }
});

t.test('a broker that comes back without any session gets the subscriptions and presence again', need, async (t) => {
  const { broker, device, ask, finals, waitFinals, model } = await setup(t, 'br2', 20);
  await ask('first');
  await waitFinals(['first'], 10_000);
  await broker.crash(); // SIGKILL and its persistence file gone: sessions and subscriptions lost
  const lostStatus = device.replies.length;
  await broker.start();
  // The node says it is online again (the retained status died with the broker's state) ...
  await device.waitFor((r) => device.replies.indexOf(r) >= lostStatus && r.topic === 'br2/status/br2' && r.body.state === 'online', 10_000, 'online again');
  // ... and the device's own client resubscribes; a message to itself says when that is done.
  await device.client.publishAsync('br2/response/probe', '{"id":"probe","type":"probe"}', { qos: 1 });
  await device.waitFor((r) => r.body.id === 'probe', 10_000, 'the device subscribed again');
  const after = ['again-0', 'again-1', 'again-2'];
  await Promise.all(after.map((id) => ask(id)));
  await waitFinals(after, 10_000);
  for (const id of after) t.equal(finals().filter((r) => r.body.id === id).length, 1, `${id}: answered by the resubscribed node`);
  t.equal(model().calls, 4, 'generated once each');
});
