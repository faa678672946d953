// /healthz and /metrics of a whole daemon over a real mosquitto, with the fake engine: readiness while
// the model loads, while the broker is away and while it stops; counters moved by real requests; the
// daemon's own log as JSON lines without its secrets.
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { createLogger } from '../../src/log.js';
import { Service } from '../../src/daemon/service.js';
import { Broker, mosquittoFor, freePort } from '../helpers/broker.js';
import { daemonConfig, DaemonProcess } from '../helpers/daemon.js';
import { Device, sleep } from '../helpers/device.js';
import { FakeModel } from '../helpers/fake-model.js';
import { parsePrometheus, valueOf, type Exposition } from '../helpers/prometheus.js';
import { logRecords } from '../helpers/serve.js';
import type { TapTest } from '../fixtures/paths.js';

const bin = mosquittoFor('the /healthz and /metrics tests');

if (bin) {
  let n = 0;
  const work = mkdtempSync(join(tmpdir(), 'edgellm-obs-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));

  /** A daemon on `brokerUrl` with an HTTP port, whose models open when `open` says so. */
  async function daemon(t: TapTest, brokerUrl: string, opts: { over?: Record<string, unknown>; delayMs?: number; open?: Promise<void> } = {}) {
    n++;
    const port = await freePort();
    const config = daemonConfig({ broker: { url: brokerUrl }, prefix: `o${n}`, node_id: `obs${n}`, state_dir: join(work, `s${n}`), http: { port }, ...opts.over });
    const logs: string[] = [];
    let opened = 0;
    const service = new Service(
      config,
      async (path) => {
        opened++;
        await opts.open;
        return new FakeModel(basename(path).replace(/\.gguf$/, ''), opts.delayMs ?? 0);
      },
      createLogger('debug', (l) => logs.push(l), { base: { node: config.node_id } }),
    );
    const started = service.start();
    started.catch(() => undefined);
    t.teardown(() => service.stop());
    const url = `http://127.0.0.1:${port}`;
    const health = async () => {
      const res = await fetch(`${url}/healthz`);
      return { status: res.status, body: (await res.json()) as { status: string; models: string; broker: string; stopping: boolean; missing: string[] } };
    };
    const metrics = async (): Promise<Exposition> => {
      const res = await fetch(`${url}/metrics`);
      t.equal(res.status, 200, '/metrics answers');
      return parsePrometheus(await res.text());
    };
    /** Polls /healthz until `pred` holds. */
    const healthUntil = async (pred: (h: Awaited<ReturnType<typeof health>>) => boolean, what: string, timeoutMs = 10_000) => {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const h = await health().catch(() => undefined);
        if (h && pred(h)) return h;
        if (Date.now() > until) throw new Error(`/healthz never showed ${what}; last: ${JSON.stringify(h)}`);
        await sleep(25);
      }
    };
    return { config, service, started, logs, url, health, metrics, healthUntil, opened: () => opened };
  }

  t.test('/healthz is 503 while the model loads, 200 once it is loaded and the broker connected', async (t) => {
    const broker = await Broker.start(bin);
    t.teardown(() => broker.destroy());
    let release!: () => void;
    const d = await daemon(t, broker.url, { open: new Promise<void>((r) => (release = r)) });
    const loading = await d.healthUntil(() => d.opened() === 1, 'the endpoint up while the model opens');
    t.same(loading.status, 503);
    t.match(loading.body, { status: 'unavailable', models: 'loading', broker: 'connecting', stopping: false, missing: ['models not loaded yet: fake', 'broker not connected yet'] });
    const m = await d.metrics();
    t.equal(valueOf(m, 'edgellm_ready'), 0, 'edgellm_ready 0 while loading');
    t.equal(valueOf(m, 'edgellm_queue_depth'), 0, 'gauges read 0 before the responder exists');
    await sleep(300);
    t.equal((await d.health()).status, 503, 'still 503 while the model takes its time');
    release();
    await d.started;
    t.same(await d.health(), { status: 200, body: { status: 'ok', node: d.config.node_id, models: 'loaded', broker: 'connected', stopping: false, missing: [] } });
    t.equal(valueOf(await d.metrics(), 'edgellm_ready'), 1);
  });

  t.test('/healthz is 503 while the broker is down, at start and later, and 200 when it is back', async (t) => {
    const broker = await Broker.create(bin); // not started yet
    t.teardown(() => broker.destroy());
    const d = await daemon(t, broker.url);
    const waiting = await d.healthUntil((h) => h.body.models === 'loaded', 'the model loaded');
    t.match(waiting, { status: 503, body: { broker: 'connecting', missing: ['broker not connected yet'] } });
    t.equal(valueOf(await d.metrics(), 'edgellm_mqtt_connected'), 0);
    await broker.start();
    await d.started;
    t.equal((await d.health()).status, 200, '200 once connected');
    t.equal(valueOf(await d.metrics(), 'edgellm_mqtt_connected'), 1);

    await broker.stop();
    const lost = await d.healthUntil((h) => h.status === 503, '503 after the broker went away');
    t.match(lost.body, { broker: 'lost', missing: ['broker connection lost; reconnecting'] });
    t.equal(valueOf(await d.metrics(), 'edgellm_mqtt_connected'), 0);
    await broker.start();
    await d.healthUntil((h) => h.status === 200, '200 after the reconnect');
    t.pass('back to 200 after the reconnect');
  });

  t.test('while it stops /healthz says so; then the endpoint is closed', async (t) => {
    const broker = await Broker.start(bin);
    t.teardown(() => broker.destroy());
    const d = await daemon(t, broker.url, { delayMs: 100 });
    await d.started;
    const device = await Device.connect(broker.url, `obs-dev-${n}`, [`o${n}/response/#`]);
    t.teardown(() => device.close());
    await device.publish(`o${n}/request/press`, { id: 'slow', prompt: 'a b c d' });
    const until = Date.now() + 5000;
    while (valueOf(await d.metrics(), 'edgellm_running') !== 1 && Date.now() < until) await sleep(20);
    const stopped = d.service.stop();
    const stopping = await d.healthUntil((h) => h.body.stopping, 'stopping');
    t.match(stopping, { status: 503, body: { status: 'unavailable', stopping: true } });
    await stopped;
    t.match((await device.final('slow')).body, { type: 'done' }, 'the running request finished in the drain');
    await t.rejects(fetch(`${d.url}/healthz`), 'nothing listens after stop');
  });

  t.test('/metrics counts real requests by outcome and route, and shows the queue', async (t) => {
    const broker = await Broker.start(bin);
    t.teardown(() => broker.destroy());
    const d = await daemon(t, broker.url, { over: { batch: { max: 1 } }, delayMs: 30 });
    await d.started;
    const prefix = `o${n}`;
    const device = await Device.connect(broker.url, `obs-dev-${n}`, [`${prefix}/response/#`]);
    t.teardown(() => device.close());
    const ask = (body: object | string) => device.publish(`${prefix}/request/press`, body);

    await ask({ id: 'd1', prompt: 'one two three', seed: 1 }); // a cache miss, generated
    t.match((await device.final('d1')).body, { type: 'done', cached: false });
    await ask({ id: 'd2', prompt: 'one two three', seed: 1 }); // the same: a hit
    t.match((await device.final('d2')).body, { type: 'done', cached: true });
    await ask('not json');
    await ask({ id: 'm1', prompt: 'x', model: 'nope' });
    t.match((await device.final('m1')).body, { type: 'error', error: { code: 'E_UNKNOWN_MODEL' } });

    // One slot: the first runs, two wait; the third is cancelled while it waits.
    for (const id of ['q1', 'q2', 'q3']) await ask({ id, prompt: 'a b c d e f' });
    const until = Date.now() + 5000;
    let seen: Exposition;
    do {
      seen = await d.metrics();
    } while (!(valueOf(seen, 'edgellm_running') === 1 && valueOf(seen, 'edgellm_queue_depth') === 2) && Date.now() < until && (await sleep(10), true));
    t.equal(valueOf(seen, 'edgellm_running'), 1, 'one running');
    t.equal(valueOf(seen, 'edgellm_queue_depth'), 2, 'two waiting');
    await device.publish(`${prefix}/cancel/press`, { id: 'q3' });
    for (const id of ['q1', 'q2', 'q3']) await device.final(id, 5000);
    t.match((await device.final('q3')).body, { finish_reason: 'cancelled' });
    await sleep(100); // the last PUBACKs clear the outbox

    const m = await d.metrics();
    const req = (labels: Record<string, string>) => valueOf(m, 'edgellm_requests_total', labels);
    t.equal(req({ outcome: 'done', route: 'local' }), 3, 'd1, q1, q2 generated');
    t.equal(req({ outcome: 'cached', route: 'local' }), 1, 'd2 from the cache');
    t.equal(req({ outcome: 'cancelled', route: 'local' }), 1, 'q3 cancelled');
    t.equal(req({ outcome: 'error', route: 'none', code: 'E_BAD_REQUEST' }), 1, 'the payload that is not JSON');
    t.equal(req({ outcome: 'error', route: 'none', code: 'E_UNKNOWN_MODEL' }), 1);
    t.equal(valueOf(m, 'edgellm_cache_hits_total'), 1);
    t.equal(valueOf(m, 'edgellm_cache_misses_total'), 1);
    // The fake answers "you said: <words>", a token a word: d1 5 tokens; q1 and q2 8 each and a random tag.
    t.equal(valueOf(m, 'edgellm_generated_tokens_total', { route: 'local' }), 5 + 9 + 9, 'tokens of the generated answers only');
    t.equal(valueOf(m, 'edgellm_request_duration_seconds_count', { route: 'local', outcome: 'done' }), 3);
    t.equal(valueOf(m, 'edgellm_time_to_first_token_seconds_count', { route: 'local' }), 3, 'one first token per generation');
    t.equal(valueOf(m, 'edgellm_queue_wait_seconds_count', { route: 'local' }), 4, 'd1, q1, q2 and the cancelled q3 waited for a slot');
    t.ok(valueOf(m, 'edgellm_queue_wait_seconds_sum', { route: 'local' }) >= 0.2, 'q2 waited for q1 (6 words x 30 ms) and more');
    t.ok(valueOf(m, 'edgellm_time_to_first_token_seconds_sum', { route: 'local' }) >= 0.03 * 3, 'every first token took a word delay at least');
    t.ok(valueOf(m, 'edgellm_decode_tokens_per_second') > 0, 'decode speed of the recent generations');
    t.equal(valueOf(m, 'edgellm_queue_depth'), 0);
    t.equal(valueOf(m, 'edgellm_running'), 0);
    t.equal(valueOf(m, 'edgellm_outbox_size'), 0, 'every reply acknowledged');
    t.equal(valueOf(m, 'edgellm_model_info', { model: 'fake', context_size: '4096' }), 1);
    t.equal(valueOf(m, 'edgellm_mqtt_connected'), 1);
  });

  t.test('the daemon logs JSON lines on stdout, with its node id, and never its broker password', async (t) => {
    const broker = await Broker.start(bin);
    t.teardown(() => broker.destroy());
    n++;
    const secrets = join(work, `secrets${n}`);
    mkdirSync(secrets);
    writeFileSync(join(secrets, 'broker.pw'), 'pw-never-logged-7\n');
    const config = daemonConfig({ broker: { url: broker.url, username: 'edge', password_file: join(secrets, 'broker.pw') }, prefix: `o${n}`, node_id: `json${n}`, state_dir: join(work, `s${n}`) });
    const child = await DaemonProcess.start(config, 0);
    t.teardown(() => child.kill('SIGKILL'));
    const device = await Device.connect(broker.url, `obs-dev-${n}`, [`o${n}/response/#`]);
    t.teardown(() => device.close());
    await device.publish(`o${n}/request/press`, { id: 'j1', prompt: 'hi' });
    await device.final('j1');
    await child.kill('SIGTERM');
    const stdout = child.stdout;
    const records = logRecords(stdout);
    t.ok(records.length >= 5, `${records.length} lines, every one a JSON log record`);
    t.ok(records.every((r) => r.node === config.node_id), 'each names the node');
    t.ok(records.some((r) => r.level === 'debug' && r.msg === `accepted press/j1`), 'log.level debug reaches the log');
    t.ok(records.some((r) => r.level === 'info' && r.msg === 'stopped'), 'the last words are not lost at exit');
    t.notOk(child.output.includes('pw-never-logged'), 'the broker password is not logged');
  });

  t.test('a value the daemon protects is masked in any later line', async (t) => {
    const broker = await Broker.start(bin);
    t.teardown(() => broker.destroy());
    const pwFile = join(work, `pw${n}`);
    writeFileSync(pwFile, 'pw-in-a-message-9\n');
    const d = await daemon(t, broker.url, { over: { broker: { url: broker.url, username: 'edge', password_file: pwFile } } });
    await d.started;
    d.service.log.warn('the broker rejected pw-in-a-message-9'); // as a library's error text might quote it
    const last = JSON.parse(d.logs[d.logs.length - 1]!) as { msg: string };
    t.equal(last.msg, 'the broker rejected [redacted]');
  });
}
