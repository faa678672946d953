// Request tracing over a real mosquitto with the fake engine: a W3C traceparent's trace id reaches the
// reply (body and MQTT 5 user property), the log lines and the audit record; without one the daemon
// makes one; an invalid one is ignored with a warning; `trace: true` adds the trace object; the
// latency histograms carry the trace id as an OpenMetrics exemplar.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RequestAudit } from '../../src/policy/audit.js';
import type { SqliteAuditLog } from '../../src/store/audit.js';
import { Broker, freePort, mosquittoFor } from '../helpers/broker.js';
import { daemonConfig, startDaemon } from '../helpers/daemon.js';
import { Device, type Reply } from '../helpers/device.js';
import type { TapTest } from '../fixtures/paths.js';

const bin = mosquittoFor('the request tracing tests');

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';
const HEX32 = /^[0-9a-f]{32}$/;

if (bin) {
  let broker: Broker;
  let n = 0;
  const work = mkdtempSync(join(tmpdir(), 'edgellm-trace-'));
  t.before(async () => {
    broker = await Broker.start(bin);
  });
  t.teardown(() => {
    broker.destroy();
    rmSync(work, { recursive: true, force: true });
  });

  async function setup(t: TapTest, over: Record<string, unknown> = {}, delayMs = 0) {
    n++;
    const prefix = `tr${n}`;
    const port = await freePort();
    const config = daemonConfig({ broker: { url: broker.url }, prefix, node_id: `trace${n}`, state_dir: join(work, `s${n}`), http: { port }, ...over });
    const daemon = await startDaemon(config, delayMs);
    t.teardown(() => daemon.service.stop());
    const device = await Device.connect(broker.url, `client-${prefix}`, [`${prefix}/response/#`]);
    t.teardown(() => device.close());
    const request = (body: object, traceparent?: string | string[]) =>
      device.publish(`${prefix}/request/dev`, body, traceparent !== undefined ? { userProperties: { traceparent } } : {});
    const audit = () => (daemon.service.audit as SqliteAuditLog).query({ type: 'request' }).map((e) => e.record as RequestAudit);
    /** The daemon's log lines (JSON) that carry this trace id. */
    const linesOf = (traceId: string) => daemon.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.trace_id === traceId);
    const metrics = async (accept?: string) => {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`, accept ? { headers: { accept } } : {});
      return { type: res.headers.get('content-type') ?? '', text: await res.text() };
    };
    return { daemon, device, request, audit, linesOf, metrics };
  }

  /** The trace id of a reply's `traceparent` user property, checked to be a valid version-00 value. */
  function traceOfProperty(t: TapTest, r: Reply): string {
    const tp = r.userProperties?.traceparent;
    t.type(tp, 'string', 'the reply carries the MQTT 5 user property traceparent');
    const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(String(tp));
    t.ok(m, `the reply's traceparent ${String(tp)} is W3C version 00`);
    return m?.[1] ?? '';
  }

  t.test('a traceparent on the request: its trace id is in the reply, a log line and the audit record', async (t) => {
    const { request, device, audit, linesOf } = await setup(t, {}, 2);
    await request({ id: 'a', prompt: 'one two', stream: true, seed: 1 }, `00-${TRACE_ID}-${PARENT}-01`);
    const done = await device.final('a');
    t.equal(done.body.trace_id, TRACE_ID, 'the done reply names the trace');
    t.equal(traceOfProperty(t, done), TRACE_ID);
    t.not(String(done.userProperties?.traceparent).split('-')[2], PARENT, "the reply's parent id is the request's own span, not the caller's");
    t.equal(String(done.userProperties?.traceparent).split('-')[3], '01', "the caller's flags are kept");
    for (const chunk of device.for('a').filter((r) => r.body.type === 'chunk')) t.equal(traceOfProperty(t, chunk), TRACE_ID, 'every chunk carries it too');
    t.ok(linesOf(TRACE_ID).some((l) => /accepted dev\/a/.test(String(l.msg))), 'the intake log line carries trace_id');
    t.match(audit().filter((r) => r.id === 'a'), [{ trace_id: TRACE_ID, outcome: 'ok' }], 'the audit record carries trace_id');
  });

  t.test('no traceparent: a trace id is made at intake and appears everywhere', async (t) => {
    const { request, device, audit, linesOf } = await setup(t);
    await request({ id: 'b', prompt: 'hello', seed: 1 });
    const done = await device.final('b');
    const id = String(done.body.trace_id);
    t.match(id, HEX32, 'a 32-hex trace id');
    t.not(id, '0'.repeat(32));
    t.equal(traceOfProperty(t, done), id, 'the same one in the user property');
    t.ok(linesOf(id).length > 0, 'and in the log');
    t.match(audit().filter((r) => r.id === 'b'), [{ trace_id: id }], 'and in the audit record');
  });

  t.test('two requests without a traceparent get different trace ids', async (t) => {
    const { request, device } = await setup(t);
    await request({ id: 'c1', prompt: 'x', seed: 1 });
    await request({ id: 'c2', prompt: 'y', seed: 1 });
    t.not((await device.final('c1')).body.trace_id, (await device.final('c2')).body.trace_id);
  });

  for (const [what, bad] of [
    ['a trace id of zeros', `00-${'0'.repeat(32)}-${PARENT}-01`],
    ['a parent id of zeros', `00-${TRACE_ID}-${'0'.repeat(16)}-01`],
    ['uppercase hex', `00-${TRACE_ID.toUpperCase()}-${PARENT}-01`],
    ['version ff', `ff-${TRACE_ID}-${PARENT}-01`],
    ['a short trace id', `00-${TRACE_ID.slice(2)}-${PARENT}-01`],
    ['two values', [`00-${TRACE_ID}-${PARENT}-01`, `00-${TRACE_ID}-${PARENT}-00`]],
  ] as const) {
    t.test(`an invalid traceparent (${what}) is ignored with a warning; the request is answered in a new trace`, async (t) => {
      const { request, device, audit, linesOf } = await setup(t);
      await request({ id: 'bad', prompt: 'hi', seed: 1 }, bad as string | string[]);
      const done = await device.final('bad');
      t.equal(done.body.type, 'done', 'answered, not refused');
      const id = String(done.body.trace_id);
      t.match(id, HEX32);
      t.not(id, TRACE_ID, 'not the invalid header’s trace id');
      const warning = linesOf(id).find((l) => l.level === 'warn');
      t.match(warning?.msg, /ignored the traceparent .*started a new trace/, 'a warning says it was ignored, in the new trace');
      t.match(audit().filter((r) => r.id === 'bad'), [{ trace_id: id }]);
    });
  }

  t.test('a refused request carries its trace id in the error reply and its audit record', async (t) => {
    const { request, device, audit } = await setup(t);
    await request({ id: 'r', prompt: 'x', max_tokens: 0 }, `00-${TRACE_ID}-${PARENT}-00`);
    const err = await device.final('r');
    t.match(err.body, { type: 'error', error: { code: 'E_BAD_REQUEST' }, trace_id: TRACE_ID });
    t.equal(traceOfProperty(t, err), TRACE_ID);
    t.match(audit().filter((r) => r.id === 'r'), [{ trace_id: TRACE_ID, outcome: 'denied' }]);
  });

  t.test('trace: true adds the trace object: route, cache, queue wait, prefill, token timings, batch sizes', async (t) => {
    const { request, device } = await setup(t, {}, 3);
    // Two at once, so the second's steps run next to the first's.
    await request({ id: 't1', prompt: 'a b c d e f', trace: true, temperature: 0.5 });
    await request({ id: 't2', prompt: 'g h i j k l', trace: true, seed: 4 });
    for (const id of ['t1', 't2']) {
      const done = await device.final(id);
      const trace = done.body.trace as Record<string, any>;
      const tokens = (done.body.usage as { completion_tokens: number }).completion_tokens;
      t.match(trace, { route: 'local', route_reason: String, queue_wait_ms: Number, prefill_ms: Number, token_ms: { p50: Number, p95: Number, tokens } }, id);
      t.ok(trace.queue_wait_ms >= 0, `${id}: queue wait >= 0`);
      t.ok(trace.token_ms.p50 <= trace.token_ms.p95, `${id}: p50 <= p95`);
      t.ok(trace.batch_sizes.length > 0 && trace.batch_sizes.every((b: { size: number; steps: number }) => b.size >= 1 && b.steps >= 1), `${id}: batch sizes >= 1`);
      t.equal(trace.batch_sizes.reduce((s: number, b: { steps: number }) => s + b.steps, 0), tokens, `${id}: one step per generated token`);
    }
    const traceOf = async (id: string) => (await device.final(id)).body.trace as { cache: string; batch_sizes: { size: number }[] };
    t.equal((await traceOf('t1')).cache, 'bypass', 'a sampled request is not looked up in the cache');
    t.equal((await traceOf('t2')).cache, 'miss', 'a seeded one is, and missed');
    t.ok((await traceOf('t2')).batch_sizes.some((b) => b.size === 2), 'the two ran side by side in some steps');
  });

  t.test('trace: true on a cached answer: route "cache", cache hit, no timings', async (t) => {
    const { request, device } = await setup(t);
    await request({ id: 'first', prompt: 'same words', seed: 9 });
    await device.final('first');
    await request({ id: 'again', prompt: 'same words', seed: 9, trace: true });
    const done = await device.final('again');
    t.equal(done.body.cached, true);
    t.same(done.body.trace, { route: 'cache', route_reason: 'answered from the cache (model fake)', cache: 'hit', queue_wait_ms: 0 });
  });

  t.test('without trace: true there is no trace object', async (t) => {
    const { request, device } = await setup(t);
    await request({ id: 'plain', prompt: 'x', seed: 1 });
    t.notOk('trace' in (await device.final('plain')).body);
  });

  t.test('trace must be true or false', async (t) => {
    const { request, device } = await setup(t);
    await request({ id: 'tt', prompt: 'x', trace: 'yes' });
    t.match((await device.final('tt')).body, { type: 'error', error: { code: 'E_BAD_REQUEST', message: /trace.*must be true or false/ } });
  });

  t.test('/metrics in OpenMetrics (when asked) carries the trace ids as exemplars on the latency buckets and the token counter', async (t) => {
    const { request, device, metrics } = await setup(t, {}, 2);
    await request({ id: 'm', prompt: 'one two three', seed: 1 }, `00-${TRACE_ID}-${PARENT}-01`);
    await device.final('m');
    const om = await metrics('application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5');
    t.match(om.type, /^application\/openmetrics-text; version=1\.0\.0/);
    t.ok(om.text.endsWith('# EOF\n'), 'ends with # EOF');
    const exemplar = (re: RegExp) => om.text.split('\n').find((l) => re.test(l));
    const ex = `# \\{trace_id="${TRACE_ID}"\\} [0-9.e-]+ [0-9.]+$`;
    t.ok(exemplar(new RegExp(`^edgellm_request_duration_seconds_bucket\\{.*route="local".*\\} 1 ${ex}`)), 'on the bucket the request landed in');
    t.ok(exemplar(new RegExp(`^edgellm_time_to_first_token_seconds_bucket\\{.*\\} 1 ${ex}`)), 'on the time-to-first-token bucket');
    t.ok(exemplar(new RegExp(`^edgellm_generated_tokens_total\\{route="local"\\} 5 # \\{trace_id="${TRACE_ID}"\\} 5 `)), 'on the token counter, with the increment');
    t.equal(om.text.match(/trace_id=/g)?.length, 4, 'one per series the request touched: 3 histograms + the counter');
    t.match(om.text, /^# TYPE edgellm_requests counter$/m, 'OpenMetrics names a counter family without _total');
    t.match(om.text, /^edgellm_requests_total\{/m, 'and its samples with it');
    const plain = await metrics();
    t.match(plain.type, /^text\/plain; version=0\.0\.4/, 'without the Accept header: Prometheus text');
    t.notMatch(plain.text, /trace_id|# EOF/, 'with no exemplars');
    t.match(plain.text, /^# TYPE edgellm_requests_total counter$/m, 'and the counter names unchanged');
  });

  t.test('the OpenAI endpoint: a traceparent header joins its trace (reply header, log, audit); an invalid one is ignored with a warning', async (t) => {
    const oport = await freePort();
    const { audit, linesOf } = await setup(t, { openai: { port: oport } });
    const ask = (headers: Record<string, string>) =>
      fetch(`http://127.0.0.1:${oport}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ messages: [{ role: 'user', content: 'hi there' }], seed: 1 }) });
    const res = await ask({ traceparent: `00-${TRACE_ID}-${PARENT}-01` });
    t.equal(res.status, 200);
    await res.json();
    t.match(res.headers.get('traceparent'), new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-01$`), 'the reply names the trace');
    await new Promise((r) => setTimeout(r, 100)); // the audit record is written once the result settles
    t.match(audit().filter((r) => r.device === 'openai-api'), [{ trace_id: TRACE_ID, outcome: 'ok' }], 'the audit record carries it');
    t.ok(linesOf(TRACE_ID).length > 0, 'a log line carries it');
    const bad = await ask({ traceparent: 'not-a-traceparent' });
    t.equal(bad.status, 200, 'an invalid traceparent does not fail the request');
    await bad.json();
    const id = /^00-([0-9a-f]{32})-/.exec(bad.headers.get('traceparent') ?? '')?.[1] ?? '';
    t.match(id, HEX32, 'a new trace');
    t.match(linesOf(id).find((l) => l.level === 'warn')?.msg, /ignored the traceparent "not-a-traceparent"/);
  });

  t.test('a request taken back after a restart keeps its trace id', async (t) => {
    n++;
    const prefix = `tr${n}`;
    const config = daemonConfig({ broker: { url: broker.url }, prefix, node_id: `trace${n}`, state_dir: join(work, `s${n}`), limits: { drain_s: 0 } });
    const device = await Device.connect(broker.url, `client-${prefix}`, [`${prefix}/response/#`]);
    t.teardown(() => device.close());
    const first = await startDaemon(config, 500);
    await device.publish(`${prefix}/request/dev`, { id: 'kept', prompt: 'slow words here', seed: 2 }, { userProperties: { traceparent: `00-${TRACE_ID}-${PARENT}-01` } });
    const until = Date.now() + 5000;
    while (!first.logs.some((l) => l.includes('accepted dev/kept')) && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    await first.service.stop(); // drain_s 0: the running request is left queued for the next start
    t.equal(device.for('kept').length, 0, 'not answered before the stop');
    const second = await startDaemon(config, 0);
    t.teardown(() => second.service.stop());
    const done = await device.final('kept');
    t.equal(done.body.trace_id, TRACE_ID, 'the same trace after the restart');
    t.equal(traceOfProperty(t, done), TRACE_ID);
    t.ok(second.logs.some((l) => l.includes(`"trace_id":"${TRACE_ID}"`) && l.includes('request dev/kept: done')), "the new process's log line about it carries it");
  });
}
