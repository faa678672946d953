// The hybrid runner end to end (src/policy/hybrid.ts): access, routing, the upstream (a real HTTP
// server on loopback speaking OpenAI's streaming protocol) behind the breaker, fallback to a fake
// local model, and the audit records. Every test is bounded by short upstream timeouts.
import t from 'tap';
import { inspect } from 'node:util';
import { EdgeError } from '../src/errors.js';
import { AccessControl, MemoryGrantStore, type AccessConfig } from '../src/policy/access.js';
import { MemoryAuditSink, configLoadRecord, type RequestAudit } from '../src/policy/audit.js';
import { CircuitBreaker } from '../src/policy/breaker.js';
import { HybridRunner, type HybridReply, type HybridRequest, type HybridResult, type ReplyEvent } from '../src/policy/hybrid.js';
import { LocalRates, RoutePolicy } from '../src/policy/router.js';
import { Secret, UpstreamClient, redact } from '../src/policy/upstream.js';
import { CLOUD_TEXT, FakeLocalModel, closedPortUrl, startFakeUpstream, type FakeUpstream } from './helpers/policy-fakes.js';

const KEY = 'sk-live-hybrid-7f3a9c-SECRET';
const HOUR = 3_600_000;
const ACCESS: AccessConfig = {
  roles: {
    local: { models: ['*'], routes: ['local'] },
    hybrid: { models: ['*'], routes: ['local', 'cloud'] },
    private: { models: ['*'], routes: ['local', 'cloud'], local_only: true },
  },
  devices: { 'gw-*': 'hybrid', 'vault-1': 'private' },
  default_role: 'local',
};

let server: FakeUpstream;
t.before(async () => {
  server = await startFakeUpstream();
});
t.teardown(() => server.close());

/** Everything every test produced as text, searched for the key at the end. */
const produced: string[] = [];
t.teardown(() => {
  const hits = produced.filter((s) => s.includes(KEY));
  if (hits.length > 0) throw new Error(`the API key leaked into ${hits.length} produced strings, e.g. ${hits[0]}`);
});

function setup(opts: { url?: string; withUpstream?: boolean; fallback?: boolean; localDelayMs?: number } = {}) {
  let now = 1_700_000_000_000;
  const clock = () => now;
  const audit = new MemoryAuditSink();
  const access = new AccessControl({ config: ACCESS, grants: new MemoryGrantStore(), audit, now: clock });
  const withUpstream = opts.withUpstream ?? true;
  const policy = new RoutePolicy({
    local_models: [{ name: 'lite', context_size: 2048 }],
    ...(withUpstream ? { upstream: { model: 'big-model' } } : {}),
    max_local_prompt_tokens: 1024,
    fallback_local: opts.fallback ?? true,
  });
  const breaker = new CircuitBreaker({ failure_threshold: 2, window_ms: 60_000, cooldown_ms: 30_000 }, clock);
  const upstream = new UpstreamClient({
    url: opts.url ?? server.url,
    model: 'big-model',
    apiKey: new Secret(KEY),
    timeouts: { connect_ms: 300, first_byte_ms: 300, idle_ms: 300, total_ms: 2000 },
  });
  const local = new FakeLocalModel('lite', { delayMs: opts.localDelayMs ?? 0 });
  const runner = new HybridRunner({
    access,
    policy,
    locals: { lite: local },
    upstream: withUpstream ? upstream : undefined,
    breaker,
    rates: new LocalRates(),
    audit,
    now: clock,
  });
  return { runner, access, audit, breaker, local, upstream, advance: (ms: number) => (now += ms) };
}

let nextId = 0;
function request(device: string, extra: Partial<HybridRequest> = {}): HybridRequest {
  return { id: `r${++nextId}`, device, prompt: 'What is the spindle temperature?', payload_bytes: 80, prompt_tokens: 12, max_tokens: 8, ...extra };
}
const LONG = { prompt_tokens: 1500 };

async function collect(reply: HybridReply): Promise<{ events: ReplyEvent[]; result: HybridResult; text: string }> {
  const events: ReplyEvent[] = [];
  for await (const ev of reply) events.push(ev);
  const result = await reply.result;
  produced.push(JSON.stringify(events), JSON.stringify(result));
  const text = events.filter((e): e is Extract<ReplyEvent, { type: 'chunk' }> => e.type === 'chunk').map((e) => e.text).join('');
  return { events, result, text };
}

function refusal(f: () => unknown): EdgeError {
  try {
    f();
  } catch (err) {
    if (err instanceof EdgeError) {
      produced.push(err.message);
      return err;
    }
    throw err;
  }
  throw new Error('expected a refusal');
}

function lastRequest(audit: MemoryAuditSink): RequestAudit {
  const r = audit.requests().at(-1)!;
  produced.push(JSON.stringify(r));
  return r;
}

t.test('a long prompt goes to the cloud with a reason; a short one stays local', async (t) => {
  server.mode = 'normal';
  const { runner, audit } = setup();
  const before = server.requests;
  const cloud = await collect(runner.run(request('gw-1', LONG)));
  t.equal(cloud.text, CLOUD_TEXT);
  t.match(cloud.result, { route: 'cloud', route_reason: 'prompt 1500 tokens > max_local_prompt_tokens 1024', model: 'big-model', fallback: false, usage: { prompt_tokens: 11, completion_tokens: 5 } });
  t.equal(server.requests, before + 1);
  t.match(lastRequest(audit), { type: 'request', device: 'gw-1', allowed: true, route: 'cloud', route_reason: /max_local_prompt_tokens/, outcome: 'ok', completion_tokens: 5 });
  t.equal(lastRequest(audit).prompt, undefined, 'prompt text is not audited unless configured');

  const local = await collect(runner.run(request('gw-1')));
  t.equal(local.text, 'local lite answer: w1 w2 w3');
  t.match(local.result, { route: 'local', route_reason: 'fits local model lite', model: 'lite' });
  t.equal(server.requests, before + 1, 'the short one never reached the upstream');
});

t.test('forced routes: cloud for a short prompt, local for a long one', async (t) => {
  server.mode = 'normal';
  const { runner } = setup();
  t.match((await collect(runner.run(request('gw-1', { route: 'cloud' })))).result, { route: 'cloud', route_reason: 'route cloud requested' });
  t.match((await collect(runner.run(request('gw-1', { ...LONG, route: 'local' })))).result, { route: 'local', route_reason: 'route local requested' });
});

t.test('local_only (request or role) never reaches the upstream', async (t) => {
  server.mode = 'normal';
  const { runner } = setup();
  const before = server.requests;
  const a = await collect(runner.run(request('gw-1', { ...LONG, local_only: true })));
  t.match(a.result, { route: 'local', route_reason: /but local_only requested$/ });
  const b = await collect(runner.run(request('vault-1', LONG)));
  t.match(b.result, { route: 'local', route_reason: /but the device's role is local_only$/ });
  t.equal(refusal(() => runner.run(request('vault-1', { route: 'cloud' }))).code, 'E_FORBIDDEN');
  t.equal(server.requests, before, 'the upstream counted no request');
});

t.test('a device without the cloud route forcing it gets E_FORBIDDEN and an audit record', async (t) => {
  const { runner, audit } = setup();
  const before = server.requests;
  const e = refusal(() => runner.run(request('plc-7', { route: 'cloud' })));
  t.equal(e.code, 'E_FORBIDDEN');
  t.match(e.message, /edgellm grant/);
  t.match(lastRequest(audit), { device: 'plc-7', allowed: false, outcome: 'denied', roles: ['local'], denied: { code: 'E_FORBIDDEN' } });
  t.equal(server.requests, before);
});

t.test('a temporary grant opens the cloud until it expires; revoke is immediate', async (t) => {
  server.mode = 'normal';
  const { runner, access, advance } = setup();
  access.grant('plc-7', 'hybrid', 2 * HOUR, 'operator');
  t.match((await collect(runner.run(request('plc-7', { route: 'cloud' })))).result, { route: 'cloud' });
  advance(2 * HOUR);
  t.equal(refusal(() => runner.run(request('plc-7', { route: 'cloud' }))).code, 'E_FORBIDDEN', 'expired');
  access.grant('plc-7', 'hybrid', HOUR);
  t.match((await collect(runner.run(request('plc-7', { route: 'cloud' })))).result, { route: 'cloud' });
  access.revoke('plc-7', 'hybrid');
  t.equal(refusal(() => runner.run(request('plc-7', { route: 'cloud' }))).code, 'E_FORBIDDEN', 'revoked');
});

for (const mode of ['500', 'cut', 'hang', 'slow-first-byte', 'down'] as const) {
  t.test(`upstream ${mode}: requests fall back to local and say so, the breaker opens, then nothing is sent upstream`, async (t) => {
    const t0 = Date.now();
    server.mode = mode === 'down' ? 'normal' : mode;
    server.first_byte_delay_ms = 1500;
    const { runner, breaker, audit } = setup(mode === 'down' ? { url: await closedPortUrl() } : {});
    const before = server.requests;
    for (let i = 0; i < 2; i++) {
      const { result, events, text } = await collect(runner.run(request('gw-1', LONG)));
      t.equal(result.route, 'local');
      t.equal(result.fallback, true);
      t.match(result.route_reason, /^prompt 1500 tokens > max_local_prompt_tokens 1024; upstream failed \(.+\): fell back to local$/);
      const fb = events.find((e) => e.type === 'fallback');
      t.ok(fb, 'a fallback event tells the relay to discard the partial cloud text');
      if (mode === 'cut') t.match(fb, { discarded_chars: 'Hello from'.length });
      t.match(text, /local lite answer: w1 w2 w3$/, 'the local answer is complete');
      t.match(lastRequest(audit), { route: 'local', fallback: true, outcome: 'ok' });
    }
    t.equal(breaker.state(), 'open');
    const sent = server.requests;
    const { result } = await collect(runner.run(request('gw-1', LONG)));
    t.match(result, { route: 'local', fallback: false, route_reason: 'prompt 1500 tokens > max_local_prompt_tokens 1024, but upstream circuit open' });
    t.equal(server.requests, sent, 'an open breaker sends nothing upstream');
    if (mode !== 'down') t.equal(sent - before, 2);
    t.match(breaker.status().last_failure, { code: 'E_UPSTREAM' });
    produced.push(JSON.stringify(breaker.status()), inspect(breaker.status()));
    t.ok(Date.now() - t0 < 5000, `bounded: ${Date.now() - t0} ms`);
  });
}

t.test('after the cool-down one half-open trial goes upstream; its success closes the breaker', async (t) => {
  server.mode = '500';
  const { runner, breaker, advance } = setup();
  for (let i = 0; i < 2; i++) await collect(runner.run(request('gw-1', LONG)));
  t.equal(breaker.state(), 'open');
  advance(30_000);
  t.equal(breaker.state(), 'half_open');
  server.mode = 'slow-first-byte';
  server.first_byte_delay_ms = 100;
  const before = server.requests;
  const trial = runner.run(request('gw-1', LONG));
  t.equal(trial.route, 'cloud', 'the trial goes to the cloud');
  const second = await collect(runner.run(request('gw-1', LONG)));
  t.match(second.result, { route: 'local', route_reason: /but upstream circuit open$/ }, 'only one trial while it runs');
  t.match((await collect(trial)).result, { route: 'cloud', text: CLOUD_TEXT });
  t.equal(server.requests, before + 1);
  t.equal(breaker.state(), 'closed');
});

t.test('a failed half-open trial re-opens the breaker and still answers locally', async (t) => {
  server.mode = 'cut';
  const { runner, breaker, advance } = setup();
  for (let i = 0; i < 2; i++) await collect(runner.run(request('gw-1', LONG)));
  advance(30_000);
  const { result } = await collect(runner.run(request('gw-1', LONG)));
  t.match(result, { route: 'local', fallback: true });
  t.equal(breaker.state(), 'open');
  t.equal(breaker.status().opened_total, 2);
});

t.test('forced cloud that fails is a clear E_UPSTREAM, not a silent local answer; the key is not in it', async (t) => {
  server.mode = '500';
  const { runner, audit } = setup();
  const reply = runner.run(request('gw-1', { route: 'cloud' }));
  const err = await reply.result.catch((e: unknown) => e);
  t.ok(err instanceof EdgeError);
  const e = err as EdgeError;
  produced.push(e.message, String(e.stack));
  t.equal(e.code, 'E_UPSTREAM');
  t.match(e.message, /answered HTTP 500: .*; route "cloud" was requested, so it was not answered locally: retry later$/);
  t.notMatch(e.message, KEY);
  t.match(lastRequest(audit), { allowed: true, outcome: 'error', error: { code: 'E_UPSTREAM' } });
});

t.test('a cloud request local cannot serve fails with E_UPSTREAM when the upstream fails', async (t) => {
  server.mode = 'cut';
  const { runner } = setup();
  const reply = runner.run(request('gw-1', { prompt_tokens: 2000, max_tokens: 100 }));
  t.equal(reply.route, 'cloud');
  await t.rejects(collect(reply), { code: 'E_UPSTREAM', message: /cannot be answered locally \(prompt 2000 \+ max_tokens 100 tokens > context 2048 of lite\)/ });
});

t.test('with fallback_local off, an upstream failure is E_UPSTREAM', async (t) => {
  server.mode = '500';
  const { runner } = setup({ fallback: false });
  await t.rejects(collect(runner.run(request('gw-1', LONG))), { code: 'E_UPSTREAM', message: /fallback_local is off/ });
});

t.test('breaker open and local unable: E_NO_ROUTE at once, audited', async (t) => {
  server.mode = '500';
  const { runner, audit } = setup();
  for (let i = 0; i < 2; i++) await collect(runner.run(request('gw-1', LONG)));
  const e = refusal(() => runner.run(request('gw-1', { prompt_tokens: 2000, max_tokens: 100 })));
  t.equal(e.code, 'E_NO_ROUTE');
  t.match(lastRequest(audit), { allowed: false, denied: { code: 'E_NO_ROUTE' } });
});

t.test('no upstream configured: local, and forced cloud is E_NO_ROUTE', async (t) => {
  const { runner } = setup({ withUpstream: false });
  t.match((await collect(runner.run(request('gw-1', LONG)))).result, { route: 'local', route_reason: /but no upstream configured$/ });
  t.equal(refusal(() => runner.run(request('gw-1', { route: 'cloud' }))).code, 'E_NO_ROUTE');
});

t.test('limits and the rate limit refuse before anything runs, and are audited', async (t) => {
  const { runner, audit, local } = setup();
  t.equal(refusal(() => runner.run(request('gw-1', { payload_bytes: 10_000_000 }))).code, 'E_TOO_LARGE');
  t.equal(refusal(() => runner.run(request('gw-1', { max_tokens: 100_000 }))).code, 'E_TOO_LARGE');
  t.equal(local.calls.length, 0);
  t.same(audit.requests().map((r) => r.denied?.code), ['E_TOO_LARGE', 'E_TOO_LARGE']);
});

t.test('cancelling a cloud request mid-stream ends it cancelled, without counting against the upstream', async (t) => {
  server.mode = 'stall';
  const { runner, breaker, audit } = setup();
  const ctl = new AbortController();
  const reply = runner.run(request('gw-1', { ...LONG, signal: ctl.signal }));
  for await (const ev of reply) {
    if (ev.type === 'chunk') ctl.abort();
  }
  const r = await reply.result;
  t.equal(r.finish_reason, 'cancelled');
  t.equal(r.route, 'cloud');
  t.equal(breaker.status().failures_total, 0);
  t.match(lastRequest(audit), { outcome: 'cancelled' });
});

t.test('leaving the loop cancels a local request', async (t) => {
  const { runner } = setup({ localDelayMs: 20 });
  const reply = runner.run(request('gw-1', { max_tokens: 50 }));
  for await (const ev of reply) {
    t.equal(ev.type, 'chunk');
    break;
  }
  t.equal((await reply.result).finish_reason, 'cancelled');
});

t.test('local generations teach the rates; prompts are audited only when configured', async (t) => {
  const audit = new MemoryAuditSink();
  const rates = new LocalRates();
  const runner = new HybridRunner({
    access: new AccessControl({ config: ACCESS, grants: new MemoryGrantStore() }),
    policy: new RoutePolicy({ local_models: [{ name: 'lite', context_size: 2048 }] }),
    locals: { lite: new FakeLocalModel('lite', { prompt_ms: 500, decode_tokens_per_s: 25 }) },
    breaker: new CircuitBreaker(),
    rates,
    audit,
    audit_prompts: true,
  });
  await collect(runner.run(request('d', { prompt: Array(40).fill('word').join(' ') })));
  t.same(rates.snapshot().lite, { prefill_tokens_per_s: 80, decode_tokens_per_s: 25 });
  t.match(audit.requests()[0], { prompt: /^word word/ });
  t.throws(() => new HybridRunner({ access: new AccessControl({ grants: new MemoryGrantStore() }), policy: new RoutePolicy({ local_models: [{ name: 'x', context_size: 8 }] }), locals: {}, breaker: new CircuitBreaker(), rates, audit }), { code: 'E_CONFIG' });
  t.throws(() => new HybridRunner({ access: new AccessControl({ grants: new MemoryGrantStore() }), policy: new RoutePolicy({ local_models: [], upstream: { model: 'm' } }), locals: {}, breaker: new CircuitBreaker(), rates, audit }), { code: 'E_CONFIG' });
});

t.test('the key appears nowhere: describe(), a config-load audit record, redacted config', async (t) => {
  const { upstream, audit } = setup();
  const config = { upstream: { url: server.url, model: 'big-model', api_key: KEY, api_key_file: '/etc/edgellm/upstream.key' }, access: ACCESS };
  const rec = configLoadRecord(config, '/etc/edgellm/config.yaml', 0, [KEY]);
  audit.write(rec);
  produced.push(JSON.stringify(upstream.describe()), inspect(upstream), JSON.stringify(upstream), JSON.stringify(rec), JSON.stringify(redact(config, [KEY])), JSON.stringify(audit.records));
  t.equal(rec.digest.length, 64);
  t.equal(configLoadRecord(config, 'x', 0, [KEY]).digest, rec.digest, 'the same config gives the same digest');
  for (const s of produced) if (s.includes(KEY)) t.fail(`the key leaked: ${s}`);
  t.ok(produced.length > 40, `${produced.length} produced strings searched`);
});
