// The daemon's hybrid-cloud policy as a device sees it: a real mosquitto, a real OpenAI-compatible
// upstream on loopback (test/helpers/policy-fakes.ts, which counts its requests and can misbehave),
// the fake engine, and access control with in-process grants. Upstream timeouts are short, so every
// failure mode ends within a few seconds. These are the tests of the one cloud path production runs
// (src/daemon/request/run-cloud.ts); the OpenAI endpoint as an upstream is in openai-serve.test.ts.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditRecord, RequestAudit } from '../../src/policy/audit.js';
import type { SqliteAuditLog } from '../../src/store/audit.js';
import { Broker, mosquittoFor } from '../helpers/broker.js';
import { daemonConfig, startDaemon } from '../helpers/daemon.js';
import { Device, sleep } from '../helpers/device.js';
import { CLOUD_CHUNKS, CLOUD_TEXT, closedPortUrl, startFakeUpstream, TEST_ROLES, type FakeUpstream, type UpstreamMode } from '../helpers/policy-fakes.js';

type TapTest = Parameters<Extract<Parameters<typeof t.test>[0], (...args: never[]) => unknown>>[0];

const KEY = 'sk-policy-daemon-5e7d1c-SECRET';
const LONG = 'one two three four five six seven eight nine ten eleven twelve'; // 12 tokens for the fake engine
const bin = mosquittoFor('the daemon policy tests');

if (bin) {
  let broker: Broker;
  let n = 0;
  const work = mkdtempSync(join(tmpdir(), 'edgellm-policy-'));
  const keyFile = join(work, 'upstream.key');
  writeFileSync(keyFile, `${KEY}\n`, { mode: 0o600 });
  t.before(async () => {
    broker = await Broker.start(bin);
  });
  t.teardown(async () => {
    await broker.destroy();
    rmSync(work, { recursive: true, force: true });
  });

  const ROLES = {
    ...TEST_ROLES,
    limited: { models: ['*'], routes: ['local'], requests_per_minute: 2, max_tokens: 16 },
  };

  /** A daemon with an upstream (a fake one unless `url` says otherwise) and a device that hears everything. */
  async function setup(
    t: TapTest,
    opts: { mode?: UpstreamMode; url?: string; over?: Record<string, unknown>; upstream?: Record<string, unknown>; breaker?: Record<string, unknown>; delayMs?: number } = {},
  ) {
    n++;
    const prefix = `p${n}`;
    const fake = await startFakeUpstream(opts.mode ?? 'normal');
    t.teardown(() => fake.close());
    const config = daemonConfig({
      broker: { url: broker.url },
      prefix,
      node_id: `node${n}`,
      state_dir: join(work, prefix),
      upstream: {
        url: opts.url ?? fake.url,
        model: 'big-model',
        api_key_file: keyFile,
        timeouts: { connect_ms: 300, first_byte_ms: 300, idle_ms: 300, total_ms: 3000 },
        breaker: { failure_threshold: 2, window_ms: 60_000, cooldown_ms: 60_000, ...opts.breaker },
        ...opts.upstream,
      },
      policy: { max_local_prompt_tokens: 8 },
      access: { roles: ROLES, devices: { 'gw-*': 'hybrid', 'vault-1': 'private', 'meter-1': 'limited' }, default_role: 'local' },
      ...opts.over,
    });
    const daemon = await startDaemon(config, opts.delayMs ?? 0);
    t.teardown(() => daemon.service.stop());
    const device = await Device.connect(broker.url, `client-${prefix}`, [`${prefix}/response/#`, `${prefix}/status/#`, `${prefix}/metrics/#`]);
    t.teardown(() => device.close());
    const ask = (dev: string, body: object) => device.publish(`${prefix}/request/${dev}`, body);
    const final = async (dev: string, id: string, timeoutMs = 5000) =>
      (await device.waitFor((r) => r.topic === `${prefix}/response/${dev}` && r.body.id === id && (r.body.type === 'done' || r.body.type === 'error'), timeoutMs, `the final reply to ${dev}/${id}`)).body as Record<string, any>;
    const audit = auditOf(daemon.service.audit);
    const requestsOf = (dev: string) => audit.requests().filter((r) => r.device === dev);
    const status = () => device.replies.filter((r) => r.topic === `${prefix}/status/${config.node_id}`).map((r) => r.body as Record<string, any>);
    return { prefix, config, daemon, device, fake, ask, final, audit, requestsOf, status };
  }

  t.test('a long prompt goes to the cloud with its reason and is relayed chunk by chunk; a short one stays local', async (t) => {
    const { ask, final, device, fake, requestsOf } = await setup(t);
    await ask('gw-1', { id: 'long', prompt: LONG, stream: true });
    const cloud = await final('gw-1', 'long');
    t.match(cloud, { type: 'done', route: 'cloud', route_reason: 'prompt 12 tokens > max_local_prompt_tokens 8', text: CLOUD_TEXT, model: 'big-model', finish_reason: 'stop', usage: { prompt_tokens: 11, completion_tokens: 5 }, cached: false });
    t.notOk('fallback' in cloud, 'no fallback field when the upstream answered');
    const chunks = device.for('long').filter((r) => r.body.type === 'chunk');
    t.same(chunks.map((c) => c.body.text), CLOUD_CHUNKS, "the upstream's chunks, one reply each");
    t.same(chunks.map((c) => c.body.seq), [0, 1, 2, 3, 4]);

    await ask('gw-1', { id: 'short', prompt: 'hello there' });
    t.match(await final('gw-1', 'short'), { type: 'done', route: 'local', route_reason: 'fits local model fake', text: /^you said: hello there/, model: 'fake' });
    t.equal(fake.requests, 1, 'only the long prompt reached the upstream');
    t.equal(fake.authorizations[0], `Bearer ${KEY}`, 'with the key from upstream.api_key_file');
    t.match(fake.bodies[0], { model: 'big-model', stream: true, messages: [{ role: 'user', content: LONG }] });
    t.match(requestsOf('gw-1'), [
      { id: 'long', allowed: true, route: 'cloud', route_reason: /max_local_prompt_tokens/, outcome: 'ok', completion_tokens: 5 },
      { id: 'short', allowed: true, route: 'local', outcome: 'ok' },
    ]);
  });

  t.test('forced routes are honoured; local_only (asked or by role) never reaches the upstream', async (t) => {
    const { ask, final, fake } = await setup(t);
    await ask('gw-1', { id: 'l', prompt: LONG, route: 'local' });
    t.match(await final('gw-1', 'l'), { type: 'done', route: 'local', route_reason: 'route local requested' });
    await ask('gw-1', { id: 'lo', prompt: LONG, local_only: true });
    t.match(await final('gw-1', 'lo'), { type: 'done', route: 'local', route_reason: /local_only requested/ });
    await ask('vault-1', { id: 'v', prompt: LONG });
    t.match(await final('vault-1', 'v'), { type: 'done', route: 'local', route_reason: /the device's role is local_only/ });
    await ask('vault-1', { id: 'vc', prompt: 'hi', route: 'cloud' });
    t.match(await final('vault-1', 'vc'), { type: 'error', error: { code: 'E_FORBIDDEN' } });
    await ask('gw-1', { id: 'both', prompt: 'hi', route: 'cloud', local_only: true });
    t.match(await final('gw-1', 'both'), { type: 'error', error: { code: 'E_BAD_REQUEST', message: /contradict/ } });
    t.equal(fake.requests, 0, 'nothing local_only reached the upstream');
    await ask('gw-1', { id: 'c', prompt: 'hi', route: 'cloud' });
    t.match(await final('gw-1', 'c'), { type: 'done', route: 'cloud', route_reason: 'route cloud requested', text: CLOUD_TEXT });
    t.equal(fake.requests, 1, 'the forced cloud request did');
  });

  t.test('a device without the cloud route gets E_FORBIDDEN, audited; a temporary grant works until it expires; revoke is immediate', async (t) => {
    const { ask, final, daemon, requestsOf, fake } = await setup(t);
    const grants = daemon.service.grants!;
    await ask('press-1', { id: 'f1', prompt: 'hi', route: 'cloud' });
    t.match(await final('press-1', 'f1'), { type: 'error', error: { code: 'E_FORBIDDEN', message: /edgellm grant/ } });
    t.match(requestsOf('press-1'), [{ id: 'f1', allowed: false, denied: { code: 'E_FORBIDDEN' }, outcome: 'denied', roles: ['local'] }], 'the refusal is audited');

    const now = Date.now();
    grants.add({ device: 'press-1', role: 'hybrid', granted_at: now, expires_at: now + 2000, by: 'test' });
    await ask('press-1', { id: 'g1', prompt: 'hi', route: 'cloud' });
    t.match(await final('press-1', 'g1'), { type: 'done', route: 'cloud', text: CLOUD_TEXT }, 'granted: the cloud answers, no restart');
    await sleep(Math.max(0, now + 2100 - Date.now()));
    await ask('press-1', { id: 'g2', prompt: 'hi', route: 'cloud' });
    t.match(await final('press-1', 'g2'), { type: 'error', error: { code: 'E_FORBIDDEN' } }, 'expired: refused again');

    grants.add({ device: 'press-1', role: 'hybrid', granted_at: Date.now(), expires_at: Date.now() + 3_600_000 });
    await ask('press-1', { id: 'g3', prompt: 'hi', route: 'cloud' });
    t.match(await final('press-1', 'g3'), { type: 'done', route: 'cloud' });
    t.equal(grants.revoke('press-1', 'hybrid', Date.now()), 1, 'one active grant revoked');
    await ask('press-1', { id: 'g4', prompt: 'hi', route: 'cloud' });
    t.match(await final('press-1', 'g4'), { type: 'error', error: { code: 'E_FORBIDDEN' } }, 'revoked: refused at once');
    t.equal(fake.requests, 2, 'only the two granted requests reached the upstream');
    t.match(requestsOf('press-1').map((r) => [r.id, r.allowed, r.roles]), [
      ['f1', false, ['local']],
      ['g1', true, ['local', 'hybrid']],
      ['g2', false, ['local']],
      ['g3', true, ['local', 'hybrid']],
      ['g4', false, ['local']],
    ]);
  });

  t.test('limits and the rate limit are refused with their own codes and audited', async (t) => {
    const { ask, final, requestsOf } = await setup(t, { over: { limits: { max_prompt_tokens: 20 } } });
    await ask('meter-1', { id: 'm1', prompt: 'a', max_tokens: 32 });
    t.match(await final('meter-1', 'm1'), { type: 'error', error: { code: 'E_TOO_LARGE', message: /max_tokens 32 is more than the 16 allowed/ } });
    await ask('meter-1', { id: 'm2', prompt: 'a' });
    t.match(await final('meter-1', 'm2'), { type: 'done' }, 'the second request of the minute');
    await ask('meter-1', { id: 'm3', prompt: 'a' });
    t.match(await final('meter-1', 'm3'), { type: 'error', error: { code: 'E_RATE_LIMITED', message: /more than 2 requests per minute.*retry in \d+ s/ } });
    await ask('gw-1', { id: 'p', prompt: `${LONG} ${LONG}` });
    t.match(await final('gw-1', 'p'), { type: 'error', error: { code: 'E_TOO_LARGE', message: /24 tokens; the limit is 20 \(limits\.max_prompt_tokens\)/ } });
    t.match(requestsOf('meter-1').map((r) => r.denied?.code ?? r.outcome), ['E_TOO_LARGE', 'ok', 'E_RATE_LIMITED']);
    t.match(requestsOf('gw-1'), [{ allowed: false, denied: { code: 'E_TOO_LARGE' } }]);
  });

  t.test('the latency estimate: a slow seeded decode rate sends work to the cloud; rates measured on real generations bring it back', async (t) => {
    const { ask, final, fake } = await setup(t, { over: { policy: { slo_ms: 1000, rates: { fake: { prefill_tokens_per_s: 1000, decode_tokens_per_s: 1 } } } } });
    await ask('gw-1', { id: 'e1', prompt: 'hi', max_tokens: 5 });
    t.match(await final('gw-1', 'e1'), { route: 'cloud', route_reason: /^est\. local \d+ ms > slo_ms 1000$/ });
    for (const id of ['w1', 'w2']) {
      await ask('gw-1', { id, prompt: 'warm up', max_tokens: 5, route: 'local' });
      await final('gw-1', id);
    }
    await ask('gw-1', { id: 'e2', prompt: 'hi', max_tokens: 5 });
    t.match(await final('gw-1', 'e2'), { route: 'local', route_reason: /^est\. local \d+ ms <= slo_ms 1000$/ }, 'the measured decode rate replaced the seed');
    t.equal(fake.requests, 1);
  });

  t.test('the latency estimate counts the wait for a local slot: a busy node sends auto requests to the cloud', async (t) => {
    // Rates so fast that only the queue wait counts; each fake generation takes ~1 s (10 words, 100 ms each).
    const fast = { prefill_tokens_per_s: 1e6, decode_tokens_per_s: 1e6 };
    const { ask, final } = await setup(t, { delayMs: 100, over: { batch: { max: 1 }, policy: { slo_ms: 1500, rates: { fake: fast } } } });
    const words = 'a b c d e f g h';
    await ask('gw-1', { id: 'warm', prompt: words, max_tokens: 10, route: 'local' });
    t.match(await final('gw-1', 'warm', 5000), { route: 'local' }, 'measures how long a local run takes');
    await ask('gw-1', { id: 'idle', prompt: 'hi', max_tokens: 10 });
    t.match(await final('gw-1', 'idle', 5000), { route: 'local', route_reason: /^est\. local 0 ms <= slo_ms 1500$/ }, 'an idle node: no wait');
    await ask('gw-1', { id: 'busy1', prompt: words, max_tokens: 10, route: 'local' });
    await ask('gw-1', { id: 'busy2', prompt: words, max_tokens: 10, route: 'local' });
    await ask('gw-1', { id: 'auto', prompt: 'hi', max_tokens: 10 });
    const r = await final('gw-1', 'auto', 5000);
    t.match(r, { route: 'cloud', route_reason: /^est\. local \d+ ms > slo_ms 1500$/ }, 'one running and one waiting: about two runs of wait');
    t.ok(Number(/est\. local (\d+) ms/.exec(r.route_reason)![1]) >= 1500, r.route_reason);
  });

  t.test('with policy.fallback_local off a failed upstream is an E_UPSTREAM error that says why', async (t) => {
    const { ask, final } = await setup(t, { mode: '500', over: { policy: { max_local_prompt_tokens: 8, fallback_local: false } } });
    await ask('gw-1', { id: 'nf', prompt: LONG });
    t.match(await final('gw-1', 'nf'), { type: 'error', error: { code: 'E_UPSTREAM', message: /HTTP 500.*policy\.fallback_local is off/ } });
  });

  t.test('model classes map to a local model or the upstream', async (t) => {
    const { ask, final, fake } = await setup(t, { over: { models: ['/models/lite.gguf'], policy: { classes: { realtime: 'lite', batch: 'upstream' } } } });
    await ask('gw-1', { id: 'rt', prompt: 'hi', model: 'realtime' });
    t.match(await final('gw-1', 'rt'), { type: 'done', route: 'local', model: 'lite' });
    await ask('gw-1', { id: 'b', prompt: 'hi', model: 'batch' });
    t.match(await final('gw-1', 'b'), { type: 'done', route: 'cloud', route_reason: 'class batch maps to the cloud', model: 'big-model' });
    await ask('press-1', { id: 'pb', prompt: 'hi', model: 'batch' });
    t.match(await final('press-1', 'pb'), { type: 'error', error: { code: 'E_NO_ROUTE', message: /class batch maps to the cloud, and cloud not allowed/ } });
    t.equal(fake.requests, 1);
  });

  // Each way the upstream can fail: the request falls back to local and says so, the second failure
  // opens the breaker (shown in the status topic and metrics), and then requests stay local without
  // calling the upstream. Nothing waits longer than the upstream timeouts.
  const failures: Array<{ name: string; mode: UpstreamMode; down?: boolean; why: RegExp; discarded?: number }> = [
    { name: 'down', mode: 'normal', down: true, why: /upstream failed \(connect\)/ },
    { name: 'slow', mode: 'hang', why: /upstream failed \(timeout\)/ },
    { name: 'returning 500', mode: '500', why: /upstream failed \(HTTP 500\)/ },
    { name: 'cutting the stream', mode: 'cut', why: /upstream failed \(stream cut\)/, discarded: 'Hello from'.length },
  ];
  for (const f of failures) {
    t.test(`upstream ${f.name}: requests fall back to local and say so, and the breaker opens`, async (t) => {
      const { ask, final, device, fake, status, prefix } = await setup(t, { mode: f.mode, ...(f.down ? { url: await closedPortUrl() } : {}) });
      const started = Date.now();
      await ask('gw-1', { id: 'f1', prompt: LONG, stream: true });
      const r1 = await final('gw-1', 'f1');
      t.match(r1, { type: 'done', route: 'local', fallback: true, fallback_reason: f.why, model: 'fake', text: `you said: ${LONG}` });
      t.match(r1.route_reason, /^prompt 12 tokens > max_local_prompt_tokens 8; upstream failed \(.+\): fell back to local$/);
      const msgs = device.for('f1');
      const fb = msgs.findIndex((m) => m.body.type === 'fallback');
      t.not(fb, -1, 'a fallback message tells a streaming client to discard what came before');
      t.match(msgs[fb]!.body, { route: 'local', reason: f.why, discarded_chars: f.discarded ?? 0 });
      const after = msgs.slice(fb + 1).filter((m) => m.body.type === 'chunk');
      t.equal(after.map((m) => m.body.text).join(''), r1.text, 'the chunks after it are the local answer');
      t.same(msgs.filter((m) => m.body.type !== 'done').map((m) => m.body.seq), msgs.slice(0, -1).map((_, i) => i), 'seq counts through the fallback');

      await ask('gw-1', { id: 'f2', prompt: LONG });
      t.match(await final('gw-1', 'f2'), { route: 'local', fallback: true });
      const calls = fake.requests;
      await ask('gw-1', { id: 'f3', prompt: LONG });
      t.match(await final('gw-1', 'f3'), { route: 'local', route_reason: /, but upstream circuit open$/ }, 'breaker open: local without trying');
      t.notOk('fallback' in (await final('gw-1', 'f3')), 'not a fallback: it never went out');
      t.equal(fake.requests, calls, 'the open breaker kept it from the upstream');
      await ask('gw-1', { id: 'f4', prompt: 'hi', route: 'cloud' });
      t.match(await final('gw-1', 'f4'), { type: 'error', error: { code: 'E_NO_ROUTE', message: /upstream circuit open: retry later/ } });
      t.ok(Date.now() - started < 10_000, `all of it in ${Date.now() - started} ms`);

      await device.waitFor((r) => r.topic.startsWith(`${prefix}/status/`) && (r.body as any).upstream?.breaker === 'open', 3000, 'the status with the breaker open');
      t.match(status()[status().length - 1], { state: 'online', upstream: { model: 'big-model', breaker: 'open', retry_at: String } });
      const m = await device.waitFor((r) => r.topic.startsWith(`${prefix}/metrics/`) && (r.body as any).breaker === 'open', 3000, 'metrics with the breaker open');
      t.match(m.body, { breaker: 'open', fallback_total: 2, upstream: { breaker: { state: 'open', opened_total: 1, failures_total: 2 } } });
    });
  }

  t.test('after the cool-down one trial goes to the upstream; its success closes the breaker', async (t) => {
    const { ask, final, fake, device, prefix } = await setup(t, { mode: '500', breaker: { cooldown_ms: 1000 } });
    for (const id of ['a', 'b']) {
      await ask('gw-1', { id, prompt: LONG });
      t.match(await final('gw-1', id), { fallback: true });
    }
    await device.waitFor((r) => r.topic.startsWith(`${prefix}/status/`) && (r.body as any).upstream?.breaker === 'open', 3000, 'open');
    // The trial's first byte comes late, so a request that arrives meanwhile finds the one trial taken.
    fake.mode = 'slow-first-byte';
    fake.first_byte_delay_ms = 150;
    await sleep(1100);
    const before = fake.requests;
    await ask('gw-1', { id: 'trial', prompt: LONG });
    await ask('gw-1', { id: 'meanwhile', prompt: LONG });
    t.match(await final('gw-1', 'meanwhile'), { route: 'local', route_reason: /, but upstream circuit open$/ }, 'only one trial while it runs');
    t.match(await final('gw-1', 'trial'), { route: 'cloud', text: CLOUD_TEXT }, 'the half-open trial');
    t.equal(fake.requests, before + 1, 'one request reached the upstream');
    fake.mode = 'normal';
    await device.waitFor((r) => r.topic.startsWith(`${prefix}/status/`) && (r.body as any).upstream?.breaker === 'closed', 3000, 'closed again in the status');
    await ask('gw-1', { id: 'next', prompt: LONG });
    t.match(await final('gw-1', 'next'), { route: 'cloud' });
  });

  t.test('a failed half-open trial re-opens the breaker and still answers locally', async (t) => {
    const { ask, final, daemon } = await setup(t, { mode: 'cut', breaker: { cooldown_ms: 1000 } });
    for (const id of ['a', 'b']) {
      await ask('gw-1', { id, prompt: LONG });
      t.match(await final('gw-1', id), { fallback: true });
    }
    await sleep(1100);
    t.equal(daemon.service.policy!.breakerState(), 'half_open');
    await ask('gw-1', { id: 'trial', prompt: LONG });
    t.match(await final('gw-1', 'trial'), { type: 'done', route: 'local', fallback: true, fallback_reason: /stream cut/ });
    t.match(daemon.service.policy!.upstreamStatus()!.breaker, { state: 'open', opened_total: 2 });
  });

  // 12 prompt tokens + 4090 to generate do not fit the fake model's 4096: only the upstream can answer.
  const BEYOND_LOCAL = { prompt: LONG, max_tokens: 4090 };
  const BIG_LIMITS = { limits: { max_tokens: 8192 } };

  t.test('a cloud request local cannot hold fails with E_UPSTREAM when the upstream fails, saying why', async (t) => {
    const { ask, final, requestsOf } = await setup(t, { mode: 'cut', over: BIG_LIMITS });
    await ask('gw-1', { id: 'big', ...BEYOND_LOCAL });
    t.match(await final('gw-1', 'big'), { type: 'error', error: { code: 'E_UPSTREAM', message: /stream.*; it cannot be answered locally \(prompt \d+ \+ max_tokens 4090 tokens > context 4096 of fake\): retry later$/ } });
    t.match(requestsOf('gw-1'), [{ id: 'big', allowed: true, route: 'cloud', outcome: 'error', error: { code: 'E_UPSTREAM' } }]);
  });

  t.test('breaker open and local unable: E_NO_ROUTE at once, audited', async (t) => {
    const { ask, final, requestsOf, fake } = await setup(t, { mode: '500', over: BIG_LIMITS });
    for (const id of ['a', 'b']) {
      await ask('gw-1', { id, prompt: LONG });
      t.match(await final('gw-1', id), { fallback: true });
    }
    const calls = fake.requests;
    await ask('gw-1', { id: 'big', ...BEYOND_LOCAL });
    t.match(await final('gw-1', 'big'), { type: 'error', error: { code: 'E_NO_ROUTE' } });
    t.equal(fake.requests, calls, 'nothing went upstream');
    t.match(requestsOf('gw-1').at(-1), { id: 'big', allowed: false, denied: { code: 'E_NO_ROUTE' }, outcome: 'denied' });
  });

  t.test('no upstream configured: a long prompt stays local and says why; forced cloud is E_NO_ROUTE', async (t) => {
    const { ask, final, fake } = await setup(t, { over: { upstream: { url: '' } } });
    await ask('gw-1', { id: 'l', prompt: LONG });
    t.match(await final('gw-1', 'l'), { type: 'done', route: 'local', route_reason: /but no upstream configured$/ });
    await ask('gw-1', { id: 'c', prompt: 'hi', route: 'cloud' });
    t.match(await final('gw-1', 'c'), { type: 'error', error: { code: 'E_NO_ROUTE' } });
    t.equal(fake.requests, 0);
  });

  t.test('a forced cloud request whose upstream fails is a clear E_UPSTREAM error, never a hang', async (t) => {
    const { ask, final, requestsOf } = await setup(t, { mode: 'stall' });
    const started = Date.now();
    await ask('gw-1', { id: 'x', prompt: 'hi', route: 'cloud' });
    const r = await final('gw-1', 'x');
    t.match(r, { type: 'error', error: { code: 'E_UPSTREAM', message: /no data for idle_ms 300.*route "cloud" was requested, so it was not answered locally/ } });
    t.ok(Date.now() - started < 3000, 'bounded by the idle timeout');
    t.match(requestsOf('gw-1'), [{ id: 'x', allowed: true, route: 'cloud', outcome: 'error', error: { code: 'E_UPSTREAM' } }]);
  });

  t.test('cancel and deadline reach a cloud request, and neither counts against the breaker', async (t) => {
    const { ask, final, device, prefix, daemon } = await setup(t, { mode: 'stall', upstream: { timeouts: { connect_ms: 300, first_byte_ms: 300, idle_ms: 10_000, total_ms: 20_000 } } });
    await ask('gw-1', { id: 'c', prompt: 'hi', route: 'cloud', stream: true });
    await device.waitFor((r) => r.body.id === 'c' && r.body.type === 'chunk' && r.body.seq === 1, 3000, 'two chunks');
    await device.publish(`${prefix}/cancel/gw-1`, { id: 'c' });
    t.match(await final('gw-1', 'c'), { type: 'done', route: 'cloud', finish_reason: 'cancelled', text: 'Hello from' });
    await ask('gw-1', { id: 'd', prompt: 'hi', route: 'cloud', deadline_ms: 400 });
    t.match(await final('gw-1', 'd'), { type: 'error', error: { code: 'E_DEADLINE' } });
    t.match(daemon.service.policy!.upstreamStatus()!.breaker, { state: 'closed', failures_total: 0 });
  });

  t.test('the API key appears nowhere: log, status, metrics, replies and audit', async (t) => {
    const { ask, final, device, daemon, audit, fake, prefix } = await setup(t, { mode: '500' });
    await ask('gw-1', { id: 'k1', prompt: 'hi', route: 'cloud' });
    const r = await final('gw-1', 'k1');
    t.match(r, { type: 'error', error: { code: 'E_UPSTREAM', message: /HTTP 500: internal error while serving Bearer \[redacted\] \(key \[redacted\]\)/ } }, "the upstream's message, the key masked");
    t.equal(fake.authorizations[0], `Bearer ${KEY}`, 'the key was sent to the upstream');
    await ask('gw-1', { id: 'k2', prompt: LONG });
    await final('gw-1', 'k2');
    await device.waitFor((m) => m.topic.startsWith(`${prefix}/metrics/`) && (m.body as any).breaker === 'open', 3000, 'metrics after the failures');
    const records = audit.records; // read before the stop closes the store
    await daemon.service.stop();
    const everything = [daemon.logs.join(''), JSON.stringify(device.replies.map((m) => [m.topic, m.body])), JSON.stringify(records)];
    t.ok(daemon.logs.some((l) => /API key present/.test(l)), 'the log says a key is set');
    t.ok(records.some((x) => x.type === 'config'), 'the config load is audited');
    for (const [i, what] of ['log', 'MQTT messages', 'audit records'].entries()) t.notOk(everything[i]!.includes(KEY), `no key in the ${what}`);
    t.notOk(everything.join('').includes(KEY.slice(3, 20)), 'not even a part of it');
  });

  t.test('a request accepted before a restart is decided again at the next start, without counting against the rate limit', async (t) => {
    const { ask, final, daemon, config, device } = await setup(t, { delayMs: 200, over: { batch: { max: 1 }, limits: { drain_s: 0 } } });
    await ask('meter-1', { id: 'r1', prompt: 'a b c d e f' });
    await ask('meter-1', { id: 'r2', prompt: 'a b' });
    await sleep(100);
    await daemon.service.stop();
    const again = await startDaemon(config, 0);
    t.teardown(() => again.service.stop());
    const b1 = await final('meter-1', 'r1');
    const b2 = await final('meter-1', 'r2');
    t.match([b1.type, b2.type], ['done', 'done'], 'both answered after the restart though the role allows 2 a minute');
    t.equal(device.for('r1').filter((m) => m.body.type === 'done').length, 1);
    const audited = auditOf(again.service.audit).requests().filter((r) => r.device === 'meter-1');
    t.match(audited.map((r) => [r.id, r.allowed]), [['r1', true], ['r2', true]], 'decided and audited once more at the next start');
    // The new process's bucket is full (2); had the two taken-back requests been counted, r3 would be refused.
    for (const id of ['r3', 'r4']) {
      await ask('meter-1', { id, prompt: 'a' });
      t.match(await final('meter-1', id), { type: 'done' }, `${id}: the minute's allowance is still there`);
    }
    await ask('meter-1', { id: 'r5', prompt: 'a' });
    t.match(await final('meter-1', 'r5'), { type: 'error', error: { code: 'E_RATE_LIMITED' } });
  });
}

/** The daemon's audit log (SQLite) read back: every record, and the request records. */
function auditOf(sink: unknown): { readonly records: AuditRecord[]; requests(): RequestAudit[] } {
  const log = sink as SqliteAuditLog;
  return {
    get records() {
      return log.query().map((e) => e.record);
    },
    requests: () => log.query({ type: 'request' }).map((e) => e.record as RequestAudit),
  };
}
