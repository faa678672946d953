// The policy part of the daemon's config: upstream, policy, access and limits keys, their defaults,
// cross-references checked with errors that name the key, and the key kept out of --print-config.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { EdgeError } from '../../src/errors.js';
import { checkPolicyReferences, configSchema, loadConfig, readUpstreamSecret } from '../../src/config.js';
import { assertCliBuilt, cli, root, type TapTest } from '../fixtures/paths.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-policy-config-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

function configError(t: TapTest, fn: () => unknown, re: RegExp) {
  try {
    fn();
    t.fail(`expected E_CONFIG matching ${re}`);
  } catch (err) {
    t.ok(err instanceof EdgeError && err.code === 'E_CONFIG', `E_CONFIG: ${(err as Error).message}`);
    t.match((err as Error).message, re);
  }
}

t.test('the shipped default: any device may use the local model, nobody the cloud', async (t) => {
  const c = loadConfig({ env: {} });
  t.same(c.access, { roles: { local: { models: ['*'], routes: ['local'], local_only: false } }, devices: {}, default_role: 'local' });
  t.match(c.upstream, { url: '', models: [], timeouts: { connect_ms: 3000, first_byte_ms: 20000, idle_ms: 10000, total_ms: 120000 }, breaker: { failure_threshold: 3, window_ms: 60000, cooldown_ms: 30000 } });
  t.match(c.policy, { slo_ms: 0, max_local_prompt_tokens: 0, classes: {}, fallback_local: true, rates: {} });
  t.equal(c.limits.max_prompt_tokens, 8192);
  const shipped = loadConfig({ file: join(root, 'systemd', 'config.yaml'), env: {} });
  // The shipped config adds a role `cloud` (for `edgellm grant DEVICE cloud`) that no device has.
  t.same(
    shipped.access,
    { ...c.access, roles: { ...c.access.roles, cloud: { models: ['*'], routes: ['local', 'cloud'], local_only: false } } },
    'systemd/config.yaml ships the same access rules, plus a role cloud nobody has by default',
  );
});

t.test('roles, devices, classes and rates from a file; a role fills in its defaults', async (t) => {
  const c = loadConfig({
    env: {},
    file: file(
      'policy.yaml',
      [
        'models: [/m/lite.gguf, /m/full.gguf]',
        'upstream: {url: "https://api.example.com/v1", model: big, models: [huge]}',
        'policy: {slo_ms: 4000, max_local_prompt_tokens: 1024, classes: {real-time: lite, batch: full, heavy: upstream}, rates: {lite: {prefill_tokens_per_s: 300, decode_tokens_per_s: 20}}}',
        'access:',
        '  roles:',
        '    local: {}',
        '    line: {models: [real-time, heavy], routes: [local, cloud], max_tokens: 256, requests_per_minute: 30}',
        '  devices: {"press-*": line, "vault-1": [local]}',
        '',
      ].join('\n'),
    ),
  });
  t.same(c.access.roles.local, { models: ['*'], routes: ['local'], local_only: false });
  t.match(c.access.roles.line, { models: ['real-time', 'heavy'], routes: ['local', 'cloud'], max_tokens: 256, requests_per_minute: 30 });
  t.same(c.access.devices, { 'press-*': 'line', 'vault-1': ['local'] });
  t.same(c.policy.classes, { 'real-time': 'lite', batch: 'full', heavy: 'upstream' });
});

t.test('records come from EDGELLM_* variables as JSON', async (t) => {
  const c = loadConfig({
    env: {
      EDGELLM_ACCESS_ROLES: '{"local": {}, "ops": {"routes": ["local", "cloud"]}}',
      EDGELLM_ACCESS_DEVICES: '{"ops-*": "ops"}',
      EDGELLM_UPSTREAM_URL: 'http://big-box:8080/v1',
      EDGELLM_UPSTREAM_MODEL: 'qwen',
      EDGELLM_UPSTREAM_BREAKER_COOLDOWN_MS: '5000',
    },
  });
  t.same(c.access.roles.ops?.routes, ['local', 'cloud']);
  t.same(c.access.devices, { 'ops-*': 'ops' });
  t.equal(c.upstream.breaker.cooldown_ms, 5000);
  configError(t, () => loadConfig({ env: { EDGELLM_ACCESS_DEVICES: 'ops-*=ops' } }), /key "access\.devices" \(from EDGELLM_ACCESS_DEVICES\) must map device ids or globs to roles/);
});

t.test('cross-references name the key that is wrong', async (t) => {
  const models = { env: {}, flags: { model: '/m/lite.gguf' } };
  const load = (over: Record<string, unknown>) => loadConfig({ ...models, file: file('x.json', JSON.stringify(over)) });
  configError(t, () => load({ access: { devices: { 'press-*': 'operator' } } }), /access\.devices\."press-\*": "operator" is not a role: define it under access\.roles \(defined: local\)/);
  configError(t, () => load({ access: { devices: { 'press-1': ['local', 'ghost'] } } }), /access\.devices\."press-1": "ghost" is not a role/);
  configError(t, () => load({ access: { default_role: 'guest' } }), /access\.default_role "guest" is not a role/);
  configError(t, () => load({ access: { roles: { ops: {} } } }), /access\.default_role "local" is not a role: define it under access\.roles \(defined: ops\)/);
  configError(t, () => load({ policy: { classes: { fast: 'tiny' } } }), /policy\.classes\.fast: "tiny" is not a local model \(lite\) nor "upstream"/);
  configError(t, () => load({ policy: { classes: { heavy: 'upstream' } } }), /policy\.classes\.heavy maps to "upstream", but upstream\.url is empty/);
  configError(t, () => load({ policy: { classes: { lite: 'lite' } } }), /policy\.classes\.lite: "lite" is already a model name/);
  configError(t, () => load({ policy: { rates: { full: { prefill_tokens_per_s: 1, decode_tokens_per_s: 1 } } } }), /policy\.rates\.full: "full" is not a local model \(lite\)/);
  configError(t, () => load({ access: { roles: { local: { models: ['gpt-9'] } } } }), /access\.roles\.local\.models: "gpt-9" is not a model or class of this node \(lite\)/);
  configError(t, () => load({ upstream: { url: 'https://api.example.com/v1' } }), /upstream\.model is missing/);
  configError(t, () => load({ access: { roles: { local: { routes: ['moon'] } } } }), /key "access\.roles\.local\.routes\[0\]".*must be local or cloud/);
  configError(t, () => load({ access: { roles: { local: { requests_per_minute: 0 } } } }), /access\.roles\.local\.requests_per_minute.*must be a whole number >= 1/);
  // A config built in code (tests, embedders) is checked the same way when the daemon starts.
  const built = configSchema.parse({ model: '/m/lite.gguf', access: { devices: { x: 'nope' } } });
  configError(t, () => checkPolicyReferences(built), /access\.devices\."x": "nope" is not a role/);
});

t.test('the upstream key: api_key_file first, then the systemd credential; never in the config itself', async (t) => {
  const keyFile = file('key', 'sk-file-key-123\n');
  const creds = join(dir, 'creds');
  const base = { upstream: { url: 'https://api.example.com/v1', model: 'big' } };
  const c = configSchema.parse({ ...base, upstream: { ...base.upstream, api_key_file: keyFile } });
  const key = readUpstreamSecret(c, { CREDENTIALS_DIRECTORY: creds });
  t.equal(key?.reveal(), 'sk-file-key-123');
  t.equal(String(key), '[redacted]');
  t.equal(readUpstreamSecret(configSchema.parse(base), {}), undefined, 'no file, no credential: no key (no Authorization header)');
  const missing = configSchema.parse({ ...base, upstream: { ...base.upstream, api_key_file: join(dir, 'nope') } });
  configError(t, () => readUpstreamSecret(missing, {}), /upstream\.api_key_file .*nope cannot be read \(ENOENT\)/);
});

t.test('`serve --print-config` shows the policy, masks credentials in upstream.url and never holds the key', async (t) => {
  assertCliBuilt();
  const KEY = 'sk-print-config-77aa';
  const keyFile = file('print.key', `${KEY}\n`);
  const env = {
    ...process.env,
    EDGELLM_UPSTREAM_URL: `https://user:${KEY}@api.example.com/v1?api_key=${KEY}`,
    EDGELLM_UPSTREAM_MODEL: 'big',
    EDGELLM_UPSTREAM_API_KEY_FILE: keyFile,
    EDGELLM_ACCESS_DEVICES: '{"press-*": "local"}',
  };
  const r = spawnSync(process.execPath, [cli, 'serve', '--print-config'], { encoding: 'utf8', env });
  t.equal(r.status, 0, r.stderr);
  t.notOk(r.stdout.includes(KEY), 'no key in the printed config');
  const printed = parseYaml(r.stdout) as { upstream: { url: string; api_key_file: string }; access: unknown };
  t.match(printed.upstream.url, /^https:\/\/redacted@api\.example\.com\/v1\?api_key=redacted$/);
  t.equal(printed.upstream.api_key_file, keyFile, 'where the key is, not what it is');
  t.same(printed.access, { roles: { local: { models: ['*'], routes: ['local'], local_only: false } }, devices: { 'press-*': 'local' }, default_role: 'local' });
  const bad = spawnSync(process.execPath, [cli, 'serve', '--print-config'], { encoding: 'utf8', env: { ...env, EDGELLM_ACCESS_DEFAULT_ROLE: 'guest' } });
  t.equal(bad.status, 2);
  t.match(bad.stderr, /^edgellm: E_CONFIG: access\.default_role "guest" is not a role/);
  t.ok(readFileSync(keyFile, 'utf8').includes(KEY), 'the key file is untouched');
});
