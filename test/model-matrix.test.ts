// The Lite / Quantized / Full model matrix of the README as real config (examples/model-matrix.yaml):
// it loads, its classes route where the README says (the route policy the daemon builds from it),
// and `edgellm request --class` puts the class in the request.
import t from 'tap';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, modelFiles, UPSTREAM_CLASS_TARGET } from '../src/config.js';
import { CLOUD_TARGET, RoutePolicy, type RouteInput } from '../src/policy/router.js';
import { buildRequest } from '../src/cli/request.js';
import { EdgeError } from '../src/errors.js';

const example = resolve(fileURLToPath(import.meta.url), '..', '..', 'examples', 'model-matrix.yaml');

t.test('the example config loads and its classes route: Lite and Quantized here, heavy to the cloud', async (t) => {
  const config = loadConfig({ file: example, env: {} });
  const locals = [...modelFiles(config).keys()];
  t.same(locals, ['lite-q4_0', 'quality-q4_k_m'], 'Lite is the first (default) model, the quantized one the second');
  // As DaemonPolicy builds it (hybrid-policy.ts), with each model's context from engine.context_size.
  const policy = new RoutePolicy({
    local_models: locals.map((name) => ({ name, context_size: config.engine.context_size! })),
    upstream: { model: config.upstream.model!, models: config.upstream.models },
    classes: Object.fromEntries(Object.entries(config.policy.classes).map(([c, target]) => [c, target === UPSTREAM_CLASS_TARGET ? CLOUD_TARGET : target])),
    max_local_prompt_tokens: config.policy.max_local_prompt_tokens,
    slo_ms: config.policy.slo_ms,
    fallback_local: config.policy.fallback_local,
  });
  const ask = (model: string | undefined, over: Partial<RouteInput> = {}) =>
    policy.decide({ model, prompt_tokens: 20, max_tokens: 64, allowed_routes: ['local', 'cloud'], ...over });
  t.match(ask('real-time'), { ok: true, route: 'local', model: 'lite-q4_0' });
  t.match(ask('quality'), { ok: true, route: 'local', model: 'quality-q4_k_m' });
  t.match(ask('heavy'), { ok: true, route: 'cloud', model: 'gpt-4o-mini' });
  t.match(ask(undefined), { ok: true, route: 'local', model: 'lite-q4_0' }, 'an unnamed request gets Lite');
  t.match(ask(undefined, { prompt_tokens: 1800 }), { ok: true, route: 'cloud' }, 'a prompt beyond max_local_prompt_tokens goes to the cloud');
  t.match(ask('heavy', { allowed_routes: ['local'] }), { ok: false }, 'a device without the cloud route cannot use the heavy class');
  t.same(config.access.devices, { 'press-*': 'line' });
  t.same(config.access.roles.line?.routes, ['local', 'cloud']);
});

t.test('edgellm request --class names a class as the request\'s model; with --model it is refused', async (t) => {
  const flags = { broker: 'mqtt://127.0.0.1:1', timeout: '1', prefix: 'edgellm', prompt: 'hi' };
  t.match(buildRequest({ ...flags, class: 'real-time' }), { prompt: 'hi', model: 'real-time' });
  t.match(buildRequest({ ...flags, model: 'lite-q4_0' }), { model: 'lite-q4_0' });
  t.notOk('model' in buildRequest(flags), 'neither: the node picks');
  t.throws(
    () => buildRequest({ ...flags, class: 'real-time', model: 'lite-q4_0' }),
    new EdgeError('E_BAD_ARGUMENT', '--class names a model class (policy.classes), which stands for a model: use --model or --class, not both'),
  );
});
