// RoutePolicy: local or cloud with a reason, or a coded refusal (src/policy/router.ts).
import t from 'tap';
import { LocalRates, RoutePolicy, type RouteDecision, type RouteInput, type RoutePolicyConfig } from '../src/policy/router.js';

const CONFIG: RoutePolicyConfig = {
  local_models: [
    { name: 'full', context_size: 4096 },
    { name: 'lite', context_size: 2048 },
  ],
  upstream: { model: 'big-model', models: ['huge-model'] },
  classes: { 'real-time': 'lite', batch: 'full', heavy: 'cloud' },
  max_local_prompt_tokens: 2048,
};
const policy = new RoutePolicy(CONFIG);
const BOTH = ['local', 'cloud'] as const;
const base: RouteInput = { prompt_tokens: 100, max_tokens: 64, allowed_routes: [...BOTH] };

function ok(d: RouteDecision) {
  if (!d.ok) throw new Error(`expected a route, got ${d.error.code}: ${d.error.message}`);
  return d;
}
function refused(d: RouteDecision) {
  if (d.ok) throw new Error(`expected a refusal, got ${d.route}: ${d.reason}`);
  return d.error;
}

t.test('a short prompt stays local; a long one goes to the cloud with the numbers as its reason', async (t) => {
  t.match(ok(policy.decide(base)), { route: 'local', model: 'full', reason: 'fits local model full' });
  const long = ok(policy.decide({ ...base, prompt_tokens: 3000 }));
  t.match(long, { route: 'cloud', model: 'big-model', reason: 'prompt 3000 tokens > max_local_prompt_tokens 2048', fallback_model: 'full' });
});

t.test('prompt + max_tokens beyond the local context goes to the cloud, without a local fallback', async (t) => {
  const d = ok(policy.decide({ ...base, model: 'lite', prompt_tokens: 2000, max_tokens: 100 }));
  t.equal(d.route, 'cloud');
  t.equal(d.reason, 'prompt 2000 + max_tokens 100 tokens > context 2048 of lite');
  t.equal(d.fallback_model, undefined, 'local cannot serve it');
});

t.test('route "cloud" on a node without an upstream is E_NO_ROUTE for every device, not a matter of permission', async (t) => {
  const none = new RoutePolicy({ ...CONFIG, upstream: undefined });
  for (const allowed of [['local'], ['local', 'cloud']] as const) {
    const e = refused(none.decide({ ...base, route: 'cloud', allowed_routes: [...allowed] }));
    t.equal(e.code, 'E_NO_ROUTE', `roles allowing ${allowed.join(', ')}`);
  }
  t.equal(refused(policy.decide({ ...base, route: 'cloud', allowed_routes: ['local'] })).code, 'E_FORBIDDEN', 'with an upstream: forbidden');
});

t.test('a default max_tokens gives way to the local context instead of pushing the request to the cloud', async (t) => {
  const asked = ok(policy.decide({ ...base, model: 'lite', prompt_tokens: 2000, max_tokens: 1024 }));
  t.equal(asked.route, 'cloud', "the request's own max_tokens must fit");
  const dflt = ok(policy.decide({ ...base, model: 'lite', prompt_tokens: 2000, max_tokens: 1024, max_tokens_is_default: true }));
  t.match(dflt, { route: 'local', model: 'lite' }, 'a default shrinks to the 48 tokens left');
  const full = ok(policy.decide({ ...base, model: 'lite', prompt_tokens: 2048, max_tokens: 1024, max_tokens_is_default: true }));
  t.match(full, { route: 'cloud', reason: 'prompt 2048 + max_tokens 1 tokens > context 2048 of lite' }, 'no room for one token');
});

t.test('the request route forces local or cloud when the role allows it', async (t) => {
  t.match(ok(policy.decide({ ...base, route: 'cloud' })), { route: 'cloud', reason: 'route cloud requested' });
  t.equal(ok(policy.decide({ ...base, route: 'cloud' })).fallback_model, undefined, 'forced cloud is not answered locally');
  t.match(ok(policy.decide({ ...base, route: 'local', prompt_tokens: 3000 })), { route: 'local', reason: 'route local requested' });
});

t.test('forcing a route the role does not allow is E_FORBIDDEN that says what to do', async (t) => {
  const e = refused(policy.decide({ ...base, route: 'cloud', allowed_routes: ['local'] }));
  t.equal(e.code, 'E_FORBIDDEN');
  t.match(e.message, /route "cloud" is not allowed for this device \(cloud not allowed for this device\).*edgellm grant/);
  t.equal(refused(policy.decide({ ...base, route: 'cloud', role_local_only: true })).code, 'E_FORBIDDEN');
  t.equal(refused(policy.decide({ ...base, route: 'local', allowed_routes: ['cloud'] })).code, 'E_FORBIDDEN');
  t.equal(refused(policy.decide({ ...base, allowed_routes: [] })).code, 'E_FORBIDDEN');
});

t.test('local_only (request or role), no upstream, or an open breaker keep a long prompt local and say why', async (t) => {
  const long = { ...base, prompt_tokens: 3000 };
  t.match(ok(policy.decide({ ...long, local_only: true })), { route: 'local', reason: 'prompt 3000 tokens > max_local_prompt_tokens 2048, but local_only requested' });
  t.match(ok(policy.decide({ ...long, role_local_only: true })), { route: 'local', reason: /but the device's role is local_only$/ });
  t.match(ok(policy.decide({ ...long, breaker_open: true })), { route: 'local', reason: /but upstream circuit open$/ });
  t.match(ok(policy.decide({ ...long, allowed_routes: ['local'] })), { route: 'local', reason: /but cloud not allowed for this device$/ });
  const noUpstream = new RoutePolicy({ ...CONFIG, upstream: undefined });
  t.match(ok(noUpstream.decide(long)), { route: 'local', reason: /but no upstream configured$/ });
  t.match(ok(policy.decide({ ...base, local_only: true })), { route: 'local', reason: 'local_only requested' });
});

t.test('when neither route can serve it, E_NO_ROUTE at once with both reasons', async (t) => {
  const e = refused(policy.decide({ ...base, model: 'lite', prompt_tokens: 2000, max_tokens: 100, breaker_open: true }));
  t.equal(e.code, 'E_NO_ROUTE');
  t.match(e.message, /context 2048 of lite, and upstream circuit open: shorten the prompt/);
  t.equal(refused(policy.decide({ ...base, route: 'cloud', breaker_open: true })).code, 'E_NO_ROUTE');
  t.match(refused(new RoutePolicy({ ...CONFIG, upstream: undefined }).decide({ ...base, route: 'cloud' })).message, /route "cloud" was asked for but this node has no upstream/);
  const forced = refused(policy.decide({ ...base, route: 'local', prompt_tokens: 5000 }));
  t.equal(forced.code, 'E_PROMPT_TOO_LONG', 'forced local beyond the context: the prompt is the problem');
  t.match(forced.message, /the prompt is 5000 tokens and max_tokens is 64 \(5064 in all\) for model full, but the context holds 4096; route "local" was asked for/);
  const local = refused(policy.decide({ ...base, model: 'lite', prompt_tokens: 2000, max_tokens: 100, allowed_routes: ['local'] }));
  t.equal(local.code, 'E_PROMPT_TOO_LONG', 'too long here and the cloud not allowed: not something a retry fixes');
  t.match(local.message, /for model lite, but the context holds 2048; cloud not allowed for this device: shorten the prompt or lower max_tokens/);
  t.equal(refused(policy.decide({ ...base, route: 'cloud', local_only: true })).code, 'E_BAD_REQUEST');
});

t.test('models: a model only the upstream has goes to the cloud; classes map to local models or the cloud', async (t) => {
  t.match(ok(policy.decide({ ...base, model: 'huge-model' })), { route: 'cloud', model: 'huge-model', reason: 'model huge-model is only upstream' });
  t.match(ok(policy.decide({ ...base, model: 'real-time' })), { route: 'local', model: 'lite' });
  t.match(ok(policy.decide({ ...base, model: 'batch' })), { route: 'local', model: 'full' });
  t.match(ok(policy.decide({ ...base, model: 'heavy' })), { route: 'cloud', model: 'big-model', reason: 'class heavy maps to the cloud' });
  t.match(ok(policy.decide({ ...base, model: 'lite' })), { route: 'local', model: 'lite' });
  const e = refused(policy.decide({ ...base, model: 'gpt-9' }));
  t.equal(e.code, 'E_UNKNOWN_MODEL');
  t.match(e.message, /full, lite, big-model, huge-model, real-time, batch, heavy/);
  t.equal(refused(policy.decide({ ...base, model: 'huge-model', local_only: true })).code, 'E_NO_ROUTE');
});

t.test('the latency estimate (queue + prefill + decode) above slo_ms sends the request to the cloud', async (t) => {
  const slo = new RoutePolicy({ ...CONFIG, max_local_prompt_tokens: 0, slo_ms: 5000 });
  const rates = { full: { prefill_tokens_per_s: 100, decode_tokens_per_s: 10 } };
  // 500 ms queue + 1000 tokens / 100/s + 64 tokens / 10/s = 500 + 10000 + 6400
  t.match(ok(slo.decide({ ...base, prompt_tokens: 1000, queue_wait_ms: 500, rates })), { route: 'cloud', reason: 'est. local 16900 ms > slo_ms 5000' });
  t.match(ok(slo.decide({ ...base, prompt_tokens: 100, max_tokens: 10, rates })), { route: 'local', reason: 'est. local 2000 ms <= slo_ms 5000', estimate_ms: 2000 });
  t.match(ok(slo.decide({ ...base, prompt_tokens: 1000 })), { route: 'local', reason: 'fits local model full' }, 'no rates yet: no estimate');
});

t.test('decide() is deterministic: the same input gives the same decision', async (t) => {
  const input = { ...base, prompt_tokens: 3000 };
  t.same(policy.decide(input), policy.decide(input));
});

t.test('config references are checked', async (t) => {
  t.throws(() => new RoutePolicy({ ...CONFIG, default_model: 'nope' }), { code: 'E_CONFIG' });
  t.throws(() => new RoutePolicy({ ...CONFIG, classes: { x: 'nope' } }), { code: 'E_CONFIG', message: /class "x" maps to "nope"/ });
  t.throws(() => new RoutePolicy({ local_models: [{ name: 'a', context_size: 0 }] }), { code: 'E_CONFIG' });
  const none = new RoutePolicy({ local_models: [], upstream: { model: 'big-model' } });
  t.match(ok(none.decide(base)), { route: 'cloud', reason: 'no local model configured' });
});

t.test('rates: seeded, then learned as an EWMA of observed generations', async (t) => {
  const rates = new LocalRates({ full: { prefill_tokens_per_s: 100, decode_tokens_per_s: 10 } }, 0.5);
  t.same(rates.snapshot(), { full: { prefill_tokens_per_s: 100, decode_tokens_per_s: 10 } });
  rates.observe('full', { prompt_tokens: 300, prompt_ms: 1000, decode_tokens_per_s: 20 });
  t.same(rates.snapshot().full, { prefill_tokens_per_s: 200, decode_tokens_per_s: 15 });
  rates.observe('full', { prompt_tokens: 3, prompt_ms: 1, decode_tokens_per_s: 0 });
  t.same(rates.snapshot().full, { prefill_tokens_per_s: 200, decode_tokens_per_s: 15 }, 'tiny prompts and no decode say nothing');
  rates.observe('lite', { prompt_tokens: 100, prompt_ms: 0, decode_tokens_per_s: 30 });
  t.equal(rates.snapshot().lite, undefined, 'only the decode rate is known');
  rates.observe('lite', { prompt_tokens: 100, prompt_ms: 500, decode_tokens_per_s: 30 });
  t.same(rates.snapshot().lite, { prefill_tokens_per_s: 200, decode_tokens_per_s: 30 });
  t.throws(() => new LocalRates({}, 0), { code: 'E_CONFIG' });
});

t.test('image or audio parts go to the upstream ("multimodal input"), never local, never with a local fallback', async (t) => {
  const media = [{ kind: 'image' as const, type: 'image/png', bytes: 70 }];
  const d = ok(policy.decide({ ...base, media }));
  t.match(d, { route: 'cloud', model: 'big-model', reason: 'multimodal input (image); local model full reads text only' });
  t.equal(d.fallback_model, undefined, 'a local model would answer without seeing the image');
  t.match(ok(policy.decide({ ...base, media, route: 'cloud' })), { route: 'cloud', reason: /^multimodal input \(image\)/ });
});

t.test('image or audio parts with no usable upstream are E_NO_ROUTE saying what to do; local_only or route local contradict them', async (t) => {
  const media = [{ kind: 'audio' as const, type: 'wav', bytes: 1644 }];
  const noUpstream = new RoutePolicy({ ...CONFIG, upstream: undefined, classes: {} });
  t.match(refused(noUpstream.decide({ ...base, media })), { code: 'E_NO_ROUTE', message: /audio parts, which only the upstream reads .*but no upstream configured: set upstream\.url and upstream\.model/ });
  t.match(refused(policy.decide({ ...base, media, allowed_routes: ['local'] })), { code: 'E_NO_ROUTE', message: /but cloud not allowed for this device: ask an operator for a role with the cloud route/ });
  t.match(refused(policy.decide({ ...base, media, role_local_only: true })), { code: 'E_NO_ROUTE', message: /the device's role is local_only/ });
  t.match(refused(policy.decide({ ...base, media, breaker_open: true })), { code: 'E_NO_ROUTE', message: /upstream circuit open: retry once the upstream is back/ });
  t.match(refused(policy.decide({ ...base, media, local_only: true })), { code: 'E_BAD_REQUEST', message: /local_only keeps it on this node: drop local_only, or send the text without the audio/ });
  t.match(refused(policy.decide({ ...base, media, route: 'local' })), { code: 'E_BAD_REQUEST', message: /route "local" was asked for: send route "auto" or "cloud"/ });
});
