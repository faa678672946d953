// The HTTP endpoint on its own (no broker): its config keys, routes, methods, the readiness it reports,
// the exposition format, and a port that is already taken.
import t from 'tap';
import { createServer, type Server } from 'node:net';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { DaemonMetrics } from '../../src/daemon/metrics.js';
import { OpsHttpServer } from '../../src/daemon/ops-http.js';
import { Readiness } from '../../src/daemon/readiness.js';
import { Service } from '../../src/daemon/service.js';
import { EdgeError } from '../../src/errors.js';
import { freePort } from '../helpers/broker.js';
import { daemonConfig } from '../helpers/daemon.js';
import { FakeModel } from '../helpers/fake-model.js';
import { rejects } from '../helpers/rejects.js';
import { parsePrometheus, valueOf } from '../helpers/prometheus.js';
import type { TapTest } from '../fixtures/paths.js';

const quiet = createLogger('error', () => undefined);

t.test('http.port is off by default, set by EDGELLM_HTTP_PORT or --http-port, and must be a port number', async (t) => {
  t.same(loadConfig({ env: {} }).http, { port: 0, host: '127.0.0.1' }, 'off, and on loopback when turned on');
  t.equal(loadConfig({ env: { EDGELLM_HTTP_PORT: '9100' } }).http.port, 9100);
  t.equal(loadConfig({ env: { EDGELLM_HTTP_PORT: '9100' }, flags: { httpPort: '9200' } }).http.port, 9200, 'the flag wins');
  t.equal(loadConfig({ env: { EDGELLM_HTTP_HOST: '0.0.0.0' } }).http.host, '0.0.0.0');
  await rejects(t, (async () => loadConfig({ env: {}, flags: { httpPort: '70000' } }))(), 'E_CONFIG', /http\.port.*--http-port.*port number, 0 to 65535/);
  await rejects(t, (async () => loadConfig({ env: {}, flags: { httpPort: 'nine' } }))(), 'E_CONFIG', /http\.port.*port number/);
  await rejects(t, (async () => loadConfig({ env: { EDGELLM_HTTP_PORT: '-1' } }))(), 'E_CONFIG', /http\.port.*EDGELLM_HTTP_PORT/);
  await rejects(t, (async () => loadConfig({ env: { EDGELLM_HTTP_PORT: '91.5' } }))(), 'E_CONFIG', /http\.port/);
});

async function endpoint(t: TapTest, readiness: Readiness, metrics = new DaemonMetrics({ node: 'n1', live: () => undefined, connected: () => false, ready: () => false, processMetrics: false })) {
  const server = new OpsHttpServer({ readiness, metrics, log: quiet });
  const port = await server.listen(0, '127.0.0.1');
  t.teardown(() => server.close());
  return { server, url: `http://127.0.0.1:${port}`, metrics };
}

t.test('/healthz: 503 naming what is missing, 200 once models, broker and subscriptions are there', async (t) => {
  const readiness = new Readiness('n1');
  const { url } = await endpoint(t, readiness);
  const get = async () => {
    const res = await fetch(`${url}/healthz`);
    t.equal(res.headers.get('content-type'), 'application/json');
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  readiness.expect(['a', 'b']);
  t.match(await get(), { status: 503, body: { status: 'unavailable', node: 'n1', models: 'loading', broker: 'connecting', stopping: false, missing: ['models not loaded yet: a, b', 'broker not connected yet'] } });
  readiness.loaded('a');
  readiness.loaded('b');
  t.match(await get(), { status: 503, body: { models: 'loaded', missing: ['broker not connected yet'] } });
  readiness.connection(true);
  t.match(await get(), { status: 503, body: { broker: 'connected', missing: ['subscribing to the request topics'] } });
  readiness.serving();
  t.same(await get(), { status: 200, body: { status: 'ok', node: 'n1', models: 'loaded', broker: 'connected', stopping: false, missing: [] } });
  readiness.connection(false);
  t.match(await get(), { status: 503, body: { broker: 'lost', missing: ['broker connection lost; reconnecting'] } });
  readiness.connection(true);
  t.equal((await get()).status, 200, 'back to 200 when the broker is back');
  readiness.stopping();
  t.match(await get(), { status: 503, body: { stopping: true, missing: [/^stopping/] } });
});

t.test('unknown paths are 404, other methods 405 with Allow, HEAD has no body', async (t) => {
  const { url } = await endpoint(t, new Readiness('n1'));
  const nf = await fetch(`${url}/nope`);
  t.equal(nf.status, 404);
  t.match(await nf.text(), /not found: \/nope; .*\/healthz.*\/metrics/);
  t.equal((await fetch(`${url}/`)).status, 404);
  t.equal((await fetch(`${url}/metrics/extra`)).status, 404);
  const post = await fetch(`${url}/metrics`, { method: 'POST', body: 'x' });
  t.equal(post.status, 405);
  t.equal(post.headers.get('allow'), 'GET, HEAD');
  t.equal((await fetch(`${url}/healthz`, { method: 'DELETE' })).status, 405);
  const head = await fetch(`${url}/metrics`, { method: 'HEAD' });
  t.equal(head.status, 200);
  t.equal(await head.text(), '', 'no body');
  t.equal((await fetch(`${url}/metrics?x=1`)).status, 200, 'a query string is ignored');
});

t.test('/metrics is Prometheus text from its own registry: counters move with the observer, gauges are read live', async (t) => {
  let live = { queue_depth: 3, running: 2, outbox: 1, tokens_per_s: 12.5 };
  const metrics = new DaemonMetrics({ node: 'n1', live: () => live, connected: () => true, ready: () => true });
  const { url } = await endpoint(t, new Readiness('n1'), metrics);
  metrics.model('fake', 4096);
  metrics.onCacheLookup(false);
  metrics.onFinished({ outcome: 'done', route: 'local', queue_ms: 5, ttft_ms: 40, total_ms: 900, completion_tokens: 7 });
  metrics.onCacheLookup(true);
  metrics.onFinished({ outcome: 'cached', route: 'local', total_ms: 2, completion_tokens: 7 });
  metrics.onFinished({ outcome: 'error', code: 'E_BAD_REQUEST', route: 'none', total_ms: 0, completion_tokens: 0 });
  const res = await fetch(`${url}/metrics`);
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  const e = parsePrometheus(await res.text());
  t.equal(valueOf(e, 'edgellm_requests_total', { outcome: 'done', route: 'local' }), 1);
  t.equal(valueOf(e, 'edgellm_requests_total', { outcome: 'cached', route: 'local' }), 1);
  t.equal(valueOf(e, 'edgellm_requests_total', { outcome: 'error', route: 'none', code: 'E_BAD_REQUEST' }), 1);
  t.notOk(e.samples.some((s) => s.name === 'edgellm_requests_total' && s.labels.outcome !== 'error' && 'code' in s.labels), 'only errors carry a code');
  t.equal(valueOf(e, 'edgellm_generated_tokens_total', { route: 'local' }), 7, 'a cached answer is not generated again');
  t.equal(valueOf(e, 'edgellm_cache_hits_total'), 1);
  t.equal(valueOf(e, 'edgellm_cache_misses_total'), 1);
  t.equal(valueOf(e, 'edgellm_queue_wait_seconds_count', { route: 'local' }), 1, 'the cached answer never waited for a slot');
  t.equal(valueOf(e, 'edgellm_queue_wait_seconds_sum', { route: 'local' }), 0.005, 'in seconds');
  t.equal(valueOf(e, 'edgellm_time_to_first_token_seconds_bucket', { route: 'local', le: '0.05' }), 1);
  t.equal(valueOf(e, 'edgellm_time_to_first_token_seconds_bucket', { route: 'local', le: '0.025' }), 0);
  t.equal(valueOf(e, 'edgellm_request_duration_seconds_count', { route: 'local', outcome: 'done' }), 1);
  t.equal(valueOf(e, 'edgellm_request_duration_seconds_bucket', { route: 'local', outcome: 'done', le: '+Inf' }), 1);
  t.equal(valueOf(e, 'edgellm_model_info', { model: 'fake', context_size: '4096' }), 1);
  t.equal(valueOf(e, 'edgellm_info', { node: 'n1' }), 1);
  t.same(
    ['edgellm_queue_depth', 'edgellm_running', 'edgellm_outbox_size', 'edgellm_decode_tokens_per_second', 'edgellm_mqtt_connected', 'edgellm_ready'].map((n) => valueOf(e, n)),
    [3, 2, 1, 12.5, 1, 1],
  );
  t.equal(e.types.get('edgellm_requests_total'), 'counter');
  t.equal(e.types.get('edgellm_request_duration_seconds'), 'histogram');
  t.ok(valueOf(e, 'process_resident_memory_bytes') > 0, 'process metrics are there');
  t.ok(e.types.has('nodejs_eventloop_lag_seconds'), 'and the event-loop lag');

  live = { queue_depth: 0, running: 0, outbox: 0, tokens_per_s: 0 };
  const again = parsePrometheus(await (await fetch(`${url}/metrics`)).text());
  t.equal(valueOf(again, 'edgellm_queue_depth'), 0, 'gauges are read at each scrape');

  const other = new DaemonMetrics({ node: 'n2', live: () => undefined, connected: () => false, ready: () => false, processMetrics: false });
  t.equal(valueOf(parsePrometheus(await other.text()), 'edgellm_requests_total', { outcome: 'done' }), 0, 'a second daemon in the process has its own counters');
});

t.test('a port in use is E_PORT_IN_USE naming it, before any model is loaded', async (t) => {
  const port = await freePort();
  const taken: Server = createServer();
  await new Promise<void>((r) => taken.listen(port, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => taken.close(() => r())));
  let opened = 0;
  const config = daemonConfig({ broker: { url: 'mqtt://127.0.0.1:1' }, state_dir: t.testdir(), http: { port } });
  const service = new Service(config, async (path) => {
    opened++;
    return new FakeModel(path);
  }, quiet);
  const err = await service.start().then(
    () => undefined,
    (e: unknown) => e,
  );
  await service.stop();
  t.ok(err instanceof EdgeError, String(err));
  t.match(err, { code: 'E_PORT_IN_USE', message: new RegExp(`127\\.0\\.0\\.1:${port}: the port is in use by another process; set http\\.port \\(or --http-port\\)`) });
  t.equal(opened, 0, 'no model was loaded');
});

t.test('an http.host that is not this machine is E_CONFIG saying so', async (t) => {
  const readiness = new Readiness('n1');
  const server = new OpsHttpServer({ readiness, metrics: new DaemonMetrics({ node: 'n1', live: () => undefined, connected: () => false, ready: () => false, processMetrics: false }), log: quiet });
  // 192.0.2.0/24 is TEST-NET-1: never assigned to a machine.
  await rejects(t, server.listen(0, '192.0.2.1'), 'E_CONFIG', /http\.host 192\.0\.2\.1 is not an address of this machine/);
});

t.test('a stop while a model loads ends the start there: the model is closed, nothing connects or serves', async (t) => {
  const port = await freePort();
  const config = daemonConfig({ broker: { url: `mqtt://127.0.0.1:${await freePort()}` }, state_dir: t.testdir(), http: { port }, models: ['/m/a.gguf', '/m/b.gguf'] });
  const opened: FakeModel[] = [];
  const service = new Service(config, async (path) => {
    await new Promise((r) => setTimeout(r, 300));
    const m = new FakeModel(path);
    opened.push(m);
    return m;
  }, quiet);
  const started = service.start();
  await new Promise((r) => setTimeout(r, 100)); // the first model is loading
  await service.stop();
  await started; // returns at the next step instead of connecting
  t.equal(opened.length, 1, 'the second model was never loaded');
  t.ok(opened[0]!.closed, 'the model that finished loading after the stop was closed');
  await t.rejects(fetch(`http://127.0.0.1:${port}/healthz`), 'the ops HTTP server is closed');
});
