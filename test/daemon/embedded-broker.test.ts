// The embedded broker (aedes): what `edgellm serve` runs when broker.url is unset. It speaks MQTT 3.1.1,
// so the daemon and devices reach it with 3.1.1 and name their reply topic with reply_to.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { EdgeError } from '../../src/errors.js';
import { EmbeddedBroker, embeddedBrokerFor, embeddedBrokerUrl } from '../../src/transport/mqtt/embedded-broker.js';
import { createLogger } from '../../src/log.js';
import { Service } from '../../src/daemon/service.js';
import { freePort } from '../helpers/broker.js';
import { daemonConfig, startDaemon } from '../helpers/daemon.js';
import { FakeModel } from '../helpers/fake-model.js';

const work = mkdtempSync(join(tmpdir(), 'edgellm-embedded-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

function connect(url: string, protocolVersion: 4 | 5): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { protocolVersion, reconnectPeriod: 0, connectTimeout: 3000 });
    c.once('connect', () => resolve(c));
    c.once('error', (err) => {
      c.end(true);
      reject(err);
    });
  });
}

/** A TCP listener holding a port, as another broker would. */
async function occupy(port: number): Promise<Server> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(port, '127.0.0.1', resolve));
  return s;
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

function waitMessage(c: MqttClient, topic: string, timeoutMs = 5000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no message on ${topic} within ${timeoutMs} ms`)), timeoutMs);
    const on = (tp: string, payload: Buffer) => {
      if (tp !== topic) return;
      const body = JSON.parse(payload.toString()) as Record<string, unknown>;
      if (body.type !== 'done' && body.type !== 'error') return;
      clearTimeout(timer);
      c.off('message', on);
      resolve(body);
    };
    c.on('message', on);
  });
}

t.test('the embedded broker relays MQTT 3.1.1, refuses MQTT 5 by protocol version, and frees its port on stop', async (t) => {
  const port = await freePort();
  const broker = new EmbeddedBroker({ host: '127.0.0.1', port });
  await broker.start();
  t.teardown(() => broker.stop());
  t.equal(broker.url, `mqtt://127.0.0.1:${port}`);

  const sub = await connect(broker.url, 4);
  await sub.subscribeAsync('a/#', { qos: 1 });
  const got = new Promise<string>((resolve) => sub.once('message', (_topic, payload) => resolve(payload.toString())));
  const pub = await connect(broker.url, 4);
  await pub.publishAsync('a/b', 'hello', { qos: 1 });
  t.equal(await got, 'hello');

  const refused = await connect(broker.url, 5).then(
    () => undefined,
    (err: Error & { code?: unknown }) => err,
  );
  t.equal(refused?.code, 1, 'MQTT 5 gets CONNACK 1: unacceptable protocol version (aedes 1.x has no MQTT 5)');

  const subClosed = new Promise<void>((resolve) => sub.once('close', () => resolve()));
  await broker.stop();
  await broker.stop(); // idempotent
  await subClosed;
  t.notOk(sub.connected, 'its clients are disconnected');
  sub.end(true);
  pub.end(true);
  t.ok(await canListen(port), 'the port is free again');
});

t.test('a port already in use is an E_PORT_IN_USE that names the port and both ways out', async (t) => {
  const port = await freePort();
  const holder = await occupy(port);
  t.teardown(() => holder.close());
  const broker = new EmbeddedBroker({ host: '127.0.0.1', port });
  const err = await broker.start().then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof EdgeError && err.code === 'E_PORT_IN_USE', 'E_PORT_IN_USE');
  t.match((err as Error).message, new RegExp(`port ${port} on 127\\.0\\.0\\.1 is already in use`));
  t.match((err as Error).message, new RegExp(`set broker\\.url to the broker already there \\(--broker mqtt://127\\.0\\.0\\.1:${port}\\)`));
  t.match((err as Error).message, /broker\.embedded\.port \(EDGELLM_BROKER_EMBEDDED_PORT\) to a free port/);
});

t.test('broker settings that need broker.url are refused without it, not ignored', async (t) => {
  const embedded = { host: '127.0.0.1', port: 1883 };
  t.same(embeddedBrokerFor({ tls: {}, embedded }), embedded, 'no broker.url: the embedded broker');
  t.equal(embeddedBrokerFor({ url: 'mqtt://plant:1883', tls: {}, embedded }), undefined, 'broker.url: the plant\'s broker');
  const refusal = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      return err as EdgeError;
    }
    return undefined;
  };
  const creds = refusal(() => embeddedBrokerFor({ username: 'press', password_file: '/etc/pw', tls: {}, embedded }));
  t.equal(creds?.code, 'E_CONFIG');
  t.match(creds?.message, /^broker\.username, broker\.password_file are set but broker\.url is not: set broker\.url/);
  t.match(refusal(() => embeddedBrokerFor({ tls: { cert_file: 'c.pem' }, embedded }))?.message, /^broker\.tls\.cert_file is set but broker\.url is not/);
  const fleet = refusal(() => embeddedBrokerFor({ tls: {}, embedded }, 'line1'));
  t.equal(fleet?.code, 'E_CONFIG');
  t.match(fleet?.message, /fleet\.group "line1" needs a broker the whole fleet shares: set broker\.url/);
  t.equal(embeddedBrokerUrl({ host: '0.0.0.0', port: 1884 }), 'mqtt://127.0.0.1:1884', 'a wildcard host is reached over loopback');
  t.equal(embeddedBrokerUrl({ host: '::1', port: 1883 }), 'mqtt://[::1]:1883');
});

t.test('a daemon without broker.url runs the embedded broker, answers a 3.1.1 device at its reply_to, and stops it', async (t) => {
  const port = await freePort();
  const config = daemonConfig({ state_dir: join(work, 'daemon'), broker: { embedded: { port } }, prefix: 'emb', node_id: 'n1' });
  const { service, logs } = await startDaemon(config);
  let stopped = false;
  t.teardown(() => (stopped ? undefined : service.stop()));
  t.match(logs.join(''), new RegExp(`running the embedded MQTT broker \\(MQTT 3\\.1\\.1\\) on mqtt://127\\.0\\.0\\.1:${port}`));
  t.match(logs.join(''), new RegExp(`try it: npx edgellm request -p Hello --broker mqtt://127\\.0\\.0\\.1:${port} --prefix emb`), 'the log says how to try it');

  const device = await connect(`mqtt://127.0.0.1:${port}`, 4);
  t.teardown(() => device.end(true));
  await device.subscribeAsync(['emb/replies/press-1', 'emb/response/press-1'], { qos: 1 });
  const viaReplyTo = waitMessage(device, 'emb/replies/press-1');
  await device.publishAsync('emb/request/press-1', JSON.stringify({ id: 'r1', prompt: 'hello', max_tokens: 3, reply_to: 'emb/replies/press-1' }), { qos: 1 });
  t.match(await viaReplyTo, { id: 'r1', type: 'done', model: 'fake', node: 'n1', cached: false }, 'answered at reply_to');
  const viaDefault = waitMessage(device, 'emb/response/press-1');
  await device.publishAsync('emb/request/press-1', JSON.stringify({ id: 'r2', prompt: 'hello', max_tokens: 0 }), { qos: 1 });
  t.match(await viaDefault, { id: 'r2', type: 'error', error: { code: 'E_BAD_REQUEST' } }, 'errors too, at <prefix>/response/<device>');

  await service.stop();
  stopped = true;
  t.ok(await canListen(port), 'the embedded broker stopped with the daemon');
});

t.test('a daemon whose embedded port is taken fails at once, before opening any model', async (t) => {
  const port = await freePort();
  const holder = await occupy(port);
  t.teardown(() => holder.close());
  const config = daemonConfig({ state_dir: join(work, 'taken'), broker: { embedded: { port } } });
  let opened = 0;
  const service = new Service(
    config,
    async () => {
      opened++;
      return new FakeModel('fake', 0);
    },
    createLogger('error'),
  );
  const err = await service.start().then(
    () => undefined,
    (e: unknown) => e,
  );
  await service.stop();
  t.ok(err instanceof EdgeError && err.code === 'E_PORT_IN_USE', 'E_PORT_IN_USE');
  t.match((err as Error).message, new RegExp(`port ${port} on 127\\.0\\.0\\.1 is already in use`));
  t.equal(opened, 0, 'no model was loaded: a port clash costs milliseconds, not a model load');
});
