// The daemon over a real mosquitto, as a device sees it: requests in, replies out, with a fake engine.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Broker, mosquittoFor } from '../helpers/broker.js';
import { daemonConfig, DaemonProcess, startDaemon } from '../helpers/daemon.js';
import { Device, sleep } from '../helpers/device.js';

type TapTest = Parameters<Extract<Parameters<typeof t.test>[0], (...args: never[]) => unknown>>[0];

const bin = mosquittoFor('the MQTT daemon tests');

if (bin) {
  let broker: Broker;
  let n = 0;
  t.before(async () => {
    broker = await Broker.start(bin);
  });
  t.teardown(() => broker.destroy());

  /** A fresh prefix, state dir and device per test, so tests never see each other's messages or rows. */
  function scope(t: TapTest) {
    n++;
    const prefix = `t${n}`;
    const dir = mkdtempSync(join(tmpdir(), 'edgellm-daemon-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    return { prefix, dir, stateDir: join(dir, 'state'), deviceId: `dev${n}` };
  }

  async function setup(t: TapTest, over: Record<string, unknown> = {}, delayMs = 0) {
    const s = scope(t);
    const config = daemonConfig({ broker: { url: broker.url }, prefix: s.prefix, node_id: `node${n}`, state_dir: s.stateDir, ...over });
    const daemon = await startDaemon(config, delayMs);
    t.teardown(() => daemon.service.stop());
    const device = await Device.connect(broker.url, `client-${s.prefix}`, [`${s.prefix}/response/#`, `${s.prefix}/reply/#`, `${s.prefix}/status/#`]);
    t.teardown(() => device.close());
    const request = (body: object | string, opts: Parameters<Device['publish']>[2] = {}) =>
      device.publish(`${s.prefix}/request/${s.deviceId}`, body, opts);
    return { ...s, config, daemon, device, request, model: () => daemon.models[0]! };
  }

  t.test('a request gets one done reply on its Response Topic with its Correlation Data', async (t) => {
    const { request, device, prefix } = await setup(t);
    await request({ id: 'r1', prompt: 'hello world', seed: 7 }, { responseTopic: `${prefix}/reply/x`, correlation: 'corr-42' });
    const done = await device.final('r1');
    t.equal(done.topic, `${prefix}/reply/x`);
    t.equal(done.correlation?.toString(), 'corr-42');
    t.match(done.body, {
      id: 'r1',
      type: 'done',
      text: 'you said: hello world',
      finish_reason: 'stop',
      usage: { prompt_tokens: 2, completion_tokens: 4 },
      route: 'local',
      route_reason: String,
      cached: false,
      model: 'fake',
      node: String,
      timings: { queue_ms: Number, ttft_ms: Number, total_ms: Number, tokens_per_s: Number },
    });
    await sleep(100);
    t.equal(device.for('r1').length, 1, 'exactly one message: no stream was asked for');
  });

  t.test('without a Response Topic replies go to reply_to, else to <prefix>/response/<device>', async (t) => {
    const { request, device, prefix, deviceId: dev } = await setup(t);
    await request({ id: 'a', prompt: 'x', reply_to: `${prefix}/reply/mine` });
    await request({ id: 'b', prompt: 'y' });
    t.equal((await device.final('a')).topic, `${prefix}/reply/mine`);
    t.equal((await device.final('b')).topic, `${prefix}/response/${dev}`);
  });

  t.test('a streamed request gets its chunks in order, then one done with the whole text', async (t) => {
    const { request, device } = await setup(t, {}, 5);
    await request({ id: 's', prompt: 'one two three four five', stream: true, temperature: 0 });
    const done = await device.final('s');
    const msgs = device.for('s');
    const chunks = msgs.filter((m) => m.body.type === 'chunk');
    t.same(chunks.map((c) => c.body.seq), [0, 1, 2, 3, 4, 5, 6]);
    t.equal(chunks.map((c) => c.body.text).join(''), done.body.text);
    t.equal(msgs[msgs.length - 1], done, 'done comes last');
  });

  t.test('a repeated id is answered once while running, and later gets the stored answer', async (t) => {
    const { request, device, model } = await setup(t, {}, 20);
    await request({ id: 'd', prompt: 'same thing' });
    await request({ id: 'd', prompt: 'same thing' });
    const first = await device.final('d');
    await sleep(200);
    t.equal(device.for('d').length, 1, 'one answer for two copies while it ran');
    await request({ id: 'd', prompt: 'same thing' });
    await device.waitFor(() => device.for('d').length === 2);
    t.same(device.for('d')[1]!.body, first.body, 'the stored answer, unchanged');
    t.equal(model().calls, 1, 'generated once');
  });

  t.test('malformed requests get errors that name the problem', async (t) => {
    const { device, prefix, deviceId: dev } = await setup(t);
    const topic = `${prefix}/request/${dev}`;
    const reply = { responseTopic: `${prefix}/reply/bad` };
    await device.publish(topic, 'not json {', { ...reply, correlation: 'c1' });
    const notJson = await device.waitFor((r) => r.correlation?.toString() === 'c1');
    t.match(notJson.body, { id: null, type: 'error', error: { code: 'E_BAD_REQUEST', message: /not JSON/ } });
    await device.publish(topic, { prompt: 'no id' }, { ...reply, correlation: 'c2' });
    t.match((await device.waitFor((r) => r.correlation?.toString() === 'c2')).body.error, { code: 'E_BAD_REQUEST', message: /"id" is missing/ });
    await device.publish(topic, { id: 'u', prompt: 'hi', colour: 'red' }, reply);
    t.match((await device.final('u')).body.error, { code: 'E_BAD_REQUEST', message: /unknown field "colour"/ });
    await device.publish(topic, { id: 'w', prompt: 'hi', max_tokens: 'ten' }, reply);
    t.match((await device.final('w')).body.error, { code: 'E_BAD_REQUEST', message: /field "max_tokens" must be a whole number >= 1, got "ten"/ });
    await device.publish(topic, { id: 'both', prompt: 'hi', messages: [{ role: 'user', content: 'hi' }] }, reply);
    t.match((await device.final('both')).body.error, { code: 'E_BAD_REQUEST', message: /exactly one of "prompt" or "messages"/ });
    await device.publish(topic, { id: 'big', prompt: 'hi', max_tokens: 5000 }, reply);
    t.match((await device.final('big')).body.error, { code: 'E_TOO_LARGE', message: /limits\.max_tokens/ });
    await device.publish(topic, { id: 'm', prompt: 'hi', model: 'gpt-9' }, reply);
    t.match((await device.final('m')).body.error, { code: 'E_UNKNOWN_MODEL', message: /name one of fake/ });
  });

  t.test('limits and routes a node cannot serve are refused with their own codes', async (t) => {
    const { request, device } = await setup(t, { limits: { max_prompt_bytes: 16 } });
    await request({ id: 'long', prompt: 'this prompt is longer than sixteen bytes' });
    t.match((await device.final('long')).body.error, { code: 'E_PROMPT_TOO_LONG', message: /limits\.max_prompt_bytes/ });
    await request({ id: 'chat', messages: [{ role: 'user', content: 'twelve bytes' }, { role: 'user', content: 'and more' }] });
    t.match((await device.final('chat')).body.error, { code: 'E_PROMPT_TOO_LONG' }, 'all messages count');
    await request({ id: 'cloud', prompt: 'hi', route: 'cloud' });
    t.match((await device.final('cloud')).body.error, { code: 'E_NO_ROUTE', message: /no upstream/ });
    await request({ id: 'local', prompt: 'hi', local_only: true });
    t.match((await device.final('local')).body, { type: 'done', route: 'local', route_reason: 'cloud not allowed for this device' });
  });

  t.test('a deadline that passes while generating is an E_DEADLINE reply', async (t) => {
    const { request, device } = await setup(t, {}, 100);
    await request({ id: 'late', prompt: 'a b c d e f g h', deadline_ms: 250 });
    t.match((await device.final('late')).body, { type: 'error', error: { code: 'E_DEADLINE' } });
  });

  t.test('a message that expires while waiting for a slot is an E_DEADLINE reply', async (t) => {
    const { request, device } = await setup(t, { batch: { max: 1 } }, 200);
    await request({ id: 'long', prompt: 'a b c d e f g h' });
    await request({ id: 'short-lived', prompt: 'x' }, { expirySeconds: 1 });
    const err = await device.final('short-lived', 3000);
    t.match(err.body, { type: 'error', error: { code: 'E_DEADLINE', message: /waited/ } });
    t.notOk(device.for('long').some((r) => r.body.type === 'done'), 'answered before the long one finished: not dropped until a slot freed');
  });

  t.test('cancel stops a running request and takes a waiting one out of the queue', async (t) => {
    const { request, device, prefix, deviceId: dev } = await setup(t, { batch: { max: 1 } }, 100);
    await request({ id: 'run', prompt: 'a b c d e f g h i j', stream: true });
    await request({ id: 'wait', prompt: 'x' });
    await device.waitFor((r) => r.body.id === 'run' && r.body.type === 'chunk');
    await device.publish(`${prefix}/cancel/${dev}`, { id: 'wait' });
    await device.publish(`${prefix}/cancel/${dev}`, { id: 'run' });
    const run = await device.final('run');
    t.match(run.body, { type: 'done', finish_reason: 'cancelled' });
    t.ok((run.body.text as string).length < 'you said: a b c d e f g h i j'.length, 'partial text');
    t.match((await device.final('wait')).body, { type: 'done', finish_reason: 'cancelled', text: '' });
  });

  t.test('a full queue refuses with E_QUEUE_FULL', async (t) => {
    const { request, device } = await setup(t, { batch: { max: 1 }, limits: { queue_depth: 1 } }, 100);
    await request({ id: 'q1', prompt: 'a b c' });
    await request({ id: 'q2', prompt: 'a b c' });
    await request({ id: 'q3', prompt: 'a b c' });
    t.match((await device.final('q3')).body.error, { code: 'E_QUEUE_FULL' });
    t.match((await device.final('q2', 5000)).body, { type: 'done' });
  });

  t.test('a repeated deterministic request is answered from the cache', async (t) => {
    const { request, device, model } = await setup(t);
    await request({ id: 'c1', prompt: 'cache me', temperature: 0 });
    t.match((await device.final('c1')).body, { cached: false });
    await request({ id: 'c2', prompt: 'cache me', temperature: 0 });
    const hit = await device.final('c2');
    t.match(hit.body, { type: 'done', cached: true, text: 'you said: cache me' });
    t.equal(model().calls, 1, 'the engine ran once');
    await request({ id: 'n1', prompt: 'random me', temperature: 0.8 });
    await request({ id: 'n2', prompt: 'random me', temperature: 0.8 });
    t.match((await device.final('n2')).body, { cached: false });
    t.match((await device.final('n1')).body, { cached: false });
  });

  t.test('presence: a retained online status, metrics, and offline after stop', async (t) => {
    const { daemon, device, prefix, config } = await setup(t);
    const status = `${prefix}/status/${config.node_id}`;
    t.match((await device.waitFor((r) => r.topic === status)).body, { state: 'online', node: config.node_id, models: ['fake'] });
    const metricsDevice = await Device.connect(broker.url, `metrics-${prefix}`, [`${prefix}/metrics/#`]);
    t.teardown(() => metricsDevice.close());
    const m = await metricsDevice.waitFor(() => true, 3000, 'metrics');
    t.match(m.body, { node: config.node_id, queue_depth: 0, running: 0, cache_hit_rate: Number, tokens_per_s: Number });
    await daemon.service.stop();
    await device.waitFor((r) => r.topic === status && r.body.state === 'offline');
    t.pass('offline published on stop');
  });

  t.test('a request acknowledged before a crash is answered after the restart', async (t) => {
    const s = scope(t);
    const config = daemonConfig({ broker: { url: broker.url }, prefix: s.prefix, node_id: `node${n}`, state_dir: s.stateDir });
    const device = await Device.connect(broker.url, `client-${s.prefix}`, [`${s.prefix}/response/#`]);
    t.teardown(() => device.close());
    const first = await DaemonProcess.start(config, 300);
    t.teardown(() => first.kill('SIGKILL'));
    await device.publish(`${s.prefix}/request/${s.deviceId}`, { id: 'crash', prompt: 'survive this' });
    // Committed, so its PUBACK has gone out; kill before any reply can be generated (300 ms a word).
    await first.waitFor(/accepted dev\d+\/crash/);
    await sleep(50); // the PUBACK leaves right after the commit
    await first.kill('SIGKILL');
    t.equal(device.for('crash').length, 0, 'no reply before the crash');
    const second = await DaemonProcess.start(config, 0);
    t.teardown(() => second.kill('SIGTERM'));
    const done = await device.final('crash', 10_000);
    t.match(done.body, { type: 'done', text: 'you said: survive this' });
    t.match(second.output, /resumed 1 request/);
    await sleep(300);
    t.equal(device.for('crash').length, 1, 'answered once');
  });

  t.test('SIGTERM lets a running generation finish and answer before the node exits', async (t) => {
    const s = scope(t);
    const config = daemonConfig({ broker: { url: broker.url }, prefix: s.prefix, node_id: `node${n}`, state_dir: s.stateDir });
    const device = await Device.connect(broker.url, `client-${s.prefix}`, [`${s.prefix}/response/#`]);
    t.teardown(() => device.close());
    const daemon = await DaemonProcess.start(config, 100);
    t.teardown(() => daemon.kill('SIGKILL'));
    await device.publish(`${s.prefix}/request/${s.deviceId}`, { id: 'drain', prompt: 'a b c' });
    await daemon.waitFor(/accepted dev\d+\/drain/);
    const exited = new Promise<number | null>((resolve) => daemon.proc.once('exit', (code) => resolve(code)));
    daemon.proc.kill('SIGTERM');
    t.match((await device.final('drain', 5000)).body, { type: 'done', text: 'you said: a b c' });
    t.equal(await exited, 0, 'exit 0 after draining');
  });

  t.test('what the drain time does not cover is left queued and answered after the next start', async (t) => {
    const s = scope(t);
    const config = daemonConfig({ broker: { url: broker.url }, prefix: s.prefix, node_id: `node${n}`, state_dir: s.stateDir, limits: { drain_s: 0 } });
    const device = await Device.connect(broker.url, `client-${s.prefix}`, [`${s.prefix}/response/#`]);
    t.teardown(() => device.close());
    const first = await DaemonProcess.start(config, 300);
    t.teardown(() => first.kill('SIGKILL'));
    await device.publish(`${s.prefix}/request/${s.deviceId}`, { id: 'later', prompt: 'a b c' });
    await first.waitFor(/accepted dev\d+\/later/);
    await first.kill('SIGTERM');
    t.equal(device.for('later').length, 0, 'not answered by the stopping node');
    const second = await DaemonProcess.start(config, 0);
    t.teardown(() => second.kill('SIGTERM'));
    t.match((await device.final('later', 10_000)).body, { type: 'done', text: 'you said: a b c' });
    t.match(second.output, /resumed 1 request/);
  });

  t.test('replies finished while the broker is down are sent from the outbox when it is back', async (t) => {
    const { request, device, daemon, stateDir } = await setup(t, {}, 100);
    await request({ id: 'ob', prompt: 'a b c' });
    await broker.stop();
    await sleep(1000); // the generation ends (5 words x 100 ms) while the broker is away
    await broker.start();
    const done = await device.final('ob', 10_000).catch((err: Error) => {
      throw new Error(`${err.message}\ndaemon log:\n${daemon.logs.join('')}`);
    });
    t.match(done.body, { type: 'done', text: 'you said: a b c' });
    t.ok(daemon.logs.some((l) => /outbox/.test(l)), 'the outbox was flushed on reconnect');
    t.ok(stateDir);
  });

  t.test('a fleet of two nodes sharing $share/<group>/ answers each request exactly once', async (t) => {
    const s = scope(t);
    const common = { broker: { url: broker.url }, prefix: s.prefix, fleet: { group: 'line1' } };
    const a = await startDaemon(daemonConfig({ ...common, node_id: 'node-a', state_dir: join(s.dir, 'a') }), 5);
    t.teardown(() => a.service.stop());
    const b = await startDaemon(daemonConfig({ ...common, node_id: 'node-b', state_dir: join(s.dir, 'b') }), 5);
    t.teardown(() => b.service.stop());
    const device = await Device.connect(broker.url, `client-${s.prefix}`, [`${s.prefix}/response/#`]);
    t.teardown(() => device.close());
    const ids = Array.from({ length: 12 }, (_, i) => `f${i}`);
    for (const id of ids) await device.publish(`${s.prefix}/request/${s.deviceId}`, { id, prompt: `hello ${id}` });
    const finals = await Promise.all(ids.map((id) => device.final(id)));
    await sleep(300);
    for (const id of ids) t.equal(device.for(id).length, 1, `${id} answered once`);
    const nodes = new Set(finals.map((f) => f.body.node));
    t.same([...nodes].sort(), ['node-a', 'node-b'], 'both nodes took requests');
  });
}
