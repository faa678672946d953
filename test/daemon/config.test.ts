// The daemon's config: one schema, file < EDGELLM_* variables < flags, errors that name the key.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import { EdgeError } from '../../src/errors.js';
import { loadConfig, maskSecrets, modelFiles, readBrokerPassword, readUpstreamSecret } from '../../src/config.js';
import { loadOptions } from '../../src/daemon/local-model.js';
import { freePort } from '../helpers/broker.js';
import { mkdirSync, readFileSync } from 'node:fs';

type TapLike = Parameters<Extract<Parameters<typeof t.test>[0], (...args: never[]) => unknown>>[0];

const dir = mkdtempSync(join(tmpdir(), 'edgellm-config-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

function configError(t: TapLike, fn: () => unknown, re: RegExp) {
  try {
    fn();
    t.fail('expected E_CONFIG');
  } catch (err) {
    t.ok(err instanceof EdgeError && err.code === 'E_CONFIG', 'E_CONFIG');
    t.match((err as Error).message, re);
  }
}

t.test('defaults fill every key', async (t) => {
  const c = loadConfig({ env: {} });
  t.equal(c.broker.url, undefined, 'no broker.url: serve runs the embedded broker');
  t.same(c.broker.embedded, { host: '127.0.0.1', port: 1883 }, 'the embedded broker listens on loopback only');
  t.equal(c.prefix, 'edgellm');
  t.equal(c.batch.max, 4);
  t.equal(c.limits.queue_depth, 64);
  t.equal(c.cache.enabled, true);
  t.equal(c.fleet.group, undefined);
});

t.test('flags win over variables, which win over the file', async (t) => {
  const f = file('a.yaml', 'broker:\n  url: mqtt://file:1883\nbatch:\n  max: 2\nstate_dir: /from/file\nlimits:\n  queue_depth: 7\n');
  const c = loadConfig({
    file: f,
    env: { EDGELLM_BROKER_URL: 'mqtt://env:1883', EDGELLM_BATCH_MAX: '3', EDGELLM_CACHE_ENABLED: 'false', EDGELLM_MODELS: 'a.gguf, b.gguf' },
    flags: { broker: 'mqtt://flag:1883', fleetGroup: 'g1' },
  });
  t.equal(c.broker.url, 'mqtt://flag:1883');
  t.equal(c.batch.max, 3);
  t.equal(c.state_dir, '/from/file');
  t.equal(c.limits.queue_depth, 7);
  t.equal(c.cache.enabled, false);
  t.same(c.models, ['a.gguf', 'b.gguf']);
  t.equal(c.fleet.group, 'g1');
});

t.test('JSON files work too', async (t) => {
  const c = loadConfig({ file: file('a.json', '{"prefix": "plant7", "batch": {"max": 8}}'), env: {} });
  t.equal(c.prefix, 'plant7');
  t.equal(c.batch.max, 8);
});

t.test('batch.window_ms (0 to 5000, default 0) and batch.max (1 to 64): bounds, and errors naming the key', async (t) => {
  const d = loadConfig({ env: {} });
  t.equal(d.batch.window_ms, 0, 'no window by default: requests start as they arrive');
  const c = loadConfig({ file: file('window.yaml', 'batch:\n  max: 64\n  window_ms: 5000\n'), env: {} });
  t.same(c.batch, { max: 64, window_ms: 5000 }, 'the upper bounds are accepted');
  t.equal(loadConfig({ env: { EDGELLM_BATCH_WINDOW_MS: '50' } }).batch.window_ms, 50);
  configError(t, () => loadConfig({ env: { EDGELLM_BATCH_MAX: '65' } }), /key "batch\.max" \(from EDGELLM_BATCH_MAX\) must be a whole number from 1 to 64, got number 65/);
  configError(t, () => loadConfig({ env: { EDGELLM_BATCH_WINDOW_MS: '5001' } }), /key "batch\.window_ms" \(from EDGELLM_BATCH_WINDOW_MS\) must be a whole number of ms from 0 to 5000, got number 5001/);
  configError(t, () => loadConfig({ file: file('neg.yaml', 'batch:\n  window_ms: -1\n'), env: {} }), /key "batch\.window_ms" \(from .*neg\.yaml\) must be a whole number >= 0, got number -1/);
  configError(t, () => loadConfig({ file: file('frac.yaml', 'batch:\n  window_ms: 2.5\n'), env: {} }), /key "batch\.window_ms" .*must be a whole number/);
});

t.test('errors name the key, its source and what it takes', async (t) => {
  configError(t, () => loadConfig({ env: { EDGELLM_BATCH_MAX: 'lots' } }), /key "batch\.max" \(from EDGELLM_BATCH_MAX\) must be a whole number >= 1, got "lots"/);
  const f = file('bad.yaml', 'brokr:\n  url: x\n');
  configError(t, () => loadConfig({ file: f, env: {} }), /unknown key "brokr" \(from .*bad\.yaml\)/);
  configError(t, () => loadConfig({ env: {}, flags: { fleetGroup: 'a/b' } }), /key "fleet\.group" \(from --fleet-group\) must be one topic level/);
  configError(t, () => loadConfig({ file: join(dir, 'missing.yaml'), env: {} }), /cannot read the config file/);
  configError(t, () => loadConfig({ file: file('list.yaml', '- a\n- b\n'), env: {} }), /must hold a mapping/);
  configError(t, () => loadConfig({ file: file('broken.yaml', 'a: [\n'), env: {} }), /not valid YAML/);
});

t.test('models are named by file name; two files with one name are refused', async (t) => {
  const c = loadConfig({ env: {}, flags: { model: '/m/qwen.gguf' } });
  t.same([...modelFiles(c)], [['qwen', '/m/qwen.gguf']]);
  configError(t, () => modelFiles({ ...c, models: ['/other/qwen.gguf'] }), /two models are named "qwen"/);
});

t.test('a password in the broker URL is masked; the password file is read', async (t) => {
  const c = loadConfig({ env: { EDGELLM_BROKER_URL: 'mqtts://dev:s3cret@broker:8883', EDGELLM_BROKER_PASSWORD_FILE: file('pw', 'hunter2\n') } });
  t.equal(maskSecrets(c).broker.url, 'mqtts://dev:****@broker:8883');
  t.equal(c.broker.url, 'mqtts://dev:s3cret@broker:8883', 'the original is untouched');
  t.equal(readBrokerPassword(c), 'hunter2');
  configError(t, () => readBrokerPassword({ ...c, broker: { ...c.broker, password_file: join(dir, 'nope') } }), /broker\.password_file: cannot read/);
  // A password without a user name would be refused by the broker on every reconnect, forever.
  configError(
    t,
    () => loadConfig({ env: { EDGELLM_BROKER_URL: 'mqtt://broker:1883', EDGELLM_BROKER_PASSWORD_FILE: file('pw2', 'x\n') } }),
    /broker\.password_file is set but broker\.username is not: .* set broker\.username \(EDGELLM_BROKER_USERNAME\)/,
  );
  const both = loadConfig({ env: { EDGELLM_BROKER_URL: 'mqtt://broker:1883', EDGELLM_BROKER_USERNAME: 'press-4', EDGELLM_BROKER_PASSWORD_FILE: file('pw3', 'x\n') } });
  t.equal(both.broker.username, 'press-4', 'with a user name the password file is fine');
});

t.test('`edgellm serve --print-config` prints the effective config masked; without a model serve refuses', async (t) => {
  const cli = resolve(fileURLToPath(import.meta.url), '..', '..', '..', 'dist', 'cli', 'main.js');
  const env = { ...process.env, EDGELLM_BROKER_URL: 'mqtt://u:pw@h:1883' };
  const r = spawnSync(process.execPath, [cli, 'serve', '--print-config', '--fleet-group', 'line2'], { encoding: 'utf8', env });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /url: mqtt:\/\/u:\*\*\*\*@h:1883/);
  t.match(r.stdout, /group: line2/);
  t.notMatch(r.stdout, /pw@/);
  const s = spawnSync(process.execPath, [cli, 'serve', '--state-dir', join(dir, 'state')], { encoding: 'utf8', env: { ...process.env, EDGELLM_MODEL: '' } });
  t.equal(s.status, 2);
  t.match(s.stderr, /^edgellm: E_CONFIG: no model to serve: .*--demo/, 'the message offers the demo model');
  // No broker.url: the embedded broker starts first, on a free port (1883 may be taken on a dev machine).
  const embedded = { ...process.env, EDGELLM_BROKER_EMBEDDED_PORT: String(await freePort()) };
  const m = spawnSync(process.execPath, [cli, 'serve', '--model', file('m.gguf', 'GGUF'), '--state-dir', join(dir, 'state')], { encoding: 'utf8', env: embedded });
  t.equal(m.status, 2);
  t.equal(m.stderr.trim().split('\n').length, 1, 'one line');
  t.match(m.stderr, /^edgellm: E_MODEL_CORRUPT: /, 'the real engine opens the file and says what is wrong with it');
  const missing = join(dir, 'no-such-model.gguf');
  const n = spawnSync(process.execPath, [cli, 'serve', '--model', missing, '--state-dir', join(dir, 'state')], { encoding: 'utf8', env: embedded });
  t.equal(n.status, 2);
  t.equal(n.stderr.trim().split('\n').length, 1, 'one line, no stack trace');
  t.match(n.stderr, /^edgellm: E_MODEL_NOT_FOUND: .*no-such-model\.gguf/, 'a missing model file is E_MODEL_NOT_FOUND naming it');
});

const shipped = resolve(fileURLToPath(import.meta.url), '..', '..', '..', 'systemd', 'config.yaml');

t.test('the default /etc/edgellm/config.yaml the bundle ships loads through the daemon\'s schema', async (t) => {
  const c = loadConfig({ file: shipped, env: {} });
  t.equal(c.model, '/var/lib/edgellm/models/model.gguf');
  t.equal(c.state_dir, '/var/lib/edgellm');
  t.equal(c.broker.url, undefined, 'no broker.url until the admin sets one: the embedded broker');
  t.same(c.broker.embedded, { host: '127.0.0.1', port: 1883 }, 'on loopback only');
  t.equal(c.upstream.url, '', 'no upstream until one is configured');
  t.same(loadOptions(c), { maxSequences: c.batch.max, contextSize: 2048 }, 'batch.max and engine.context_size reach loadModel');
  // install-offline.sh --model rewrites the model line with sed; the result must still load.
  const installed = file('installed.yaml', readFileSync(shipped, 'utf8').replace(/^model: .*$/m, 'model: /var/lib/edgellm/models/stories260K.gguf'));
  t.equal(loadConfig({ file: installed, env: {} }).model, '/var/lib/edgellm/models/stories260K.gguf');
});

t.test('engine.threads and engine.context_size flow into the model\'s load options', async (t) => {
  const c = loadConfig({ env: { EDGELLM_ENGINE_THREADS: '2', EDGELLM_ENGINE_CONTEXT_SIZE: '512', EDGELLM_BATCH_MAX: '3' } });
  t.same(loadOptions(c), { maxSequences: 3, threads: 2, contextSize: 512 });
  t.same(loadOptions(loadConfig({ env: {} })), { maxSequences: 4 }, 'unset: the engine\'s defaults');
  configError(t, () => loadConfig({ env: { EDGELLM_ENGINE_THREADS: '0' } }), /engine\.threads.*EDGELLM_ENGINE_THREADS/);
});

t.test('the upstream key comes from $CREDENTIALS_DIRECTORY/upstream-key; blank means no key', async (t) => {
  const creds = join(dir, 'creds');
  const withUrl = loadConfig({ env: { EDGELLM_UPSTREAM_URL: 'https://api.example.com/v1', EDGELLM_UPSTREAM_MODEL: 'big' } });
  t.equal(readUpstreamSecret(loadConfig({ env: {} }), { CREDENTIALS_DIRECTORY: creds })?.reveal(), undefined, 'no upstream.url: no key read');
  t.equal(readUpstreamSecret(withUrl, {})?.reveal(), undefined, 'outside systemd: none');
  t.equal(readUpstreamSecret(withUrl, { CREDENTIALS_DIRECTORY: creds })?.reveal(), undefined, 'no credential file: none');
  mkdirSync(creds);
  writeFileSync(join(creds, 'upstream-key'), '\n');
  t.equal(readUpstreamSecret(withUrl, { CREDENTIALS_DIRECTORY: creds })?.reveal(), undefined, 'the unit\'s blank fallback: none');
  writeFileSync(join(creds, 'upstream-key'), 'sk-test-123\n');
  t.equal(readUpstreamSecret(withUrl, { CREDENTIALS_DIRECTORY: creds })?.reveal(), 'sk-test-123');
});
