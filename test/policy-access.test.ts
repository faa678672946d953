// Access control: roles, device globs, temporary grants, limits and the rate limit (src/policy/access.ts).
import t from 'tap';
import { AccessControl, DEFAULT_ACCESS, MemoryGrantStore, globToRegExp, type AccessConfig, type AccessDecision } from '../src/policy/access.js';
import { MemoryAuditSink } from '../src/policy/audit.js';

const HOUR = 3_600_000;
const CONFIG: AccessConfig = {
  roles: {
    basic: { models: ['*'], routes: ['local'], max_tokens: 256 },
    cloud: { models: ['*'], routes: ['local', 'cloud'], max_tokens: 512, requests_per_minute: 30 },
    sensor: { models: ['lite', 'real-time'], routes: ['local'], max_tokens: 64, requests_per_minute: 6, local_only: true },
  },
  devices: { 'gateway-1': ['cloud'], 'line-?-sensor*': 'sensor', 'line-1-*': ['basic'] },
  default_role: 'basic',
};

function setup(config: AccessConfig = CONFIG) {
  let now = 1_700_000_000_000;
  const audit = new MemoryAuditSink();
  const access = new AccessControl({ config, grants: new MemoryGrantStore(), audit, now: () => now, limits: { max_payload_bytes: 1000, max_prompt_tokens: 500, max_max_tokens: 400 } });
  return { access, audit, advance: (ms: number) => (now += ms) };
}

const req = (device: string, extra: Partial<Parameters<AccessControl['check']>[0]> = {}) => ({ device, payload_bytes: 100, prompt_tokens: 10, ...extra });

function allowed(d: AccessDecision) {
  if (!d.allowed) throw new Error(`expected allowed, got ${d.error.code}: ${d.error.message}`);
  return d;
}
function denied(d: AccessDecision) {
  if (d.allowed) throw new Error('expected a refusal');
  return d.error;
}

t.test('the shipped default lets any device use the local model and nobody the cloud', async (t) => {
  const access = new AccessControl({ config: DEFAULT_ACCESS, grants: new MemoryGrantStore() });
  const d = allowed(access.check(req('anything')));
  t.same(d.routes, ['local']);
  t.same(d.permissions.models, ['*']);
  t.equal(d.max_tokens, 1024, 'limits.max_max_tokens is the default max_tokens');
});

t.test('devices map to roles by id or glob; an exact id wins, unmatched devices get the default role', async (t) => {
  const { access } = setup();
  t.same(access.permissions('gateway-1').roles, ['cloud']);
  t.same(access.permissions('line-2-sensor-7').roles, ['sensor']);
  t.same(access.permissions('line-1-sensor-3').roles, ['sensor', 'basic'], 'every matching glob contributes');
  t.same(access.permissions('office-pc').roles, ['basic']);
  t.equal(globToRegExp('a.b*').test('a.bcd'), true);
  t.equal(globToRegExp('a.b*').test('axbcd'), false, 'dots are literal');
});

t.test('roles add up: union of models and routes, the largest limits, local_only only if every role says so', async (t) => {
  const { access } = setup();
  const p = access.permissions('line-1-sensor-3');
  t.same(p.routes, ['local']);
  t.same(p.models, ['lite', 'real-time', '*']);
  t.equal(p.max_tokens, 256);
  t.equal(p.requests_per_minute, undefined, 'basic has no rate limit, so the union has none');
  t.equal(p.local_only, false);
  t.equal(access.permissions('line-2-sensor-1').local_only, true);
});

t.test('a temporary grant works until it expires, then not', async (t) => {
  const { access, audit, advance } = setup();
  t.same(allowed(access.check(req('office-pc'))).routes, ['local']);
  const g = access.grant('office-pc', 'cloud', 2 * HOUR, 'alice');
  t.same(allowed(access.check(req('office-pc'))).routes, ['local', 'cloud']);
  t.same(access.permissions('office-pc').grants, [{ role: 'cloud', expires_at: g.expires_at }]);
  advance(2 * HOUR - 1);
  t.same(allowed(access.check(req('office-pc'))).routes, ['local', 'cloud'], 'still valid a millisecond before expiry');
  advance(1);
  t.same(allowed(access.check(req('office-pc'))).routes, ['local'], 'expired');
  t.match(audit.records, [{ type: 'grant', device: 'office-pc', role: 'cloud', expires_at: g.expires_at, by: 'alice' }]);
});

t.test('revoke takes effect on the next request and is audited', async (t) => {
  const { access, audit } = setup();
  access.grant('office-pc', 'cloud', HOUR);
  t.same(allowed(access.check(req('office-pc'))).routes, ['local', 'cloud']);
  t.equal(access.revoke('office-pc', 'cloud', 'bob'), 1);
  t.same(allowed(access.check(req('office-pc'))).routes, ['local']);
  t.equal(access.revoke('office-pc'), 0, 'nothing left to revoke');
  t.match(audit.records.slice(1), [{ type: 'revoke', role: 'cloud', removed: 1, by: 'bob' }, { type: 'revoke', role: '*', removed: 0 }]);
});

t.test('grants are checked: a known role, one device, a positive duration', async (t) => {
  const { access } = setup();
  t.throws(() => access.grant('d', 'admin', HOUR), { code: 'E_BAD_ARGUMENT', message: /no role "admin": use one of basic, cloud, sensor/ });
  t.throws(() => access.grant('line-*', 'cloud', HOUR), { code: 'E_BAD_ARGUMENT' });
  t.throws(() => access.grant('d', 'cloud', 0), { code: 'E_BAD_ARGUMENT' });
});

t.test('the per-device rate limit refuses with E_RATE_LIMITED and says when to retry; tokens refill', async (t) => {
  const { access, advance } = setup();
  for (let i = 0; i < 6; i++) allowed(access.check(req('line-2-sensor-1')));
  const e = denied(access.check(req('line-2-sensor-1')));
  t.equal(e.code, 'E_RATE_LIMITED');
  t.match(e.message, /more than 6 requests per minute \(roles sensor\): retry in 10 s/);
  allowed(access.check(req('line-3-sensor-1')));
  advance(10_000);
  allowed(access.check(req('line-2-sensor-1')));
  denied(access.check(req('line-2-sensor-1')));
});

t.test('limits: payload bytes, prompt tokens, max_tokens -> E_TOO_LARGE with the numbers', async (t) => {
  const { access } = setup();
  t.match(denied(access.check(req('d', { payload_bytes: 1001 }))), { code: 'E_TOO_LARGE', message: /1001 bytes; the limit is 1000 \(limits.max_payload_bytes\)/ });
  t.match(denied(access.check(req('d', { prompt_tokens: 501 }))), { code: 'E_TOO_LARGE', message: /501 tokens; the limit is 500/ });
  t.match(denied(access.check(req('d', { max_tokens: 300 }))), { code: 'E_TOO_LARGE', message: /max_tokens 300 is more than the 256 allowed \(roles basic\): ask for at most 256/ });
  t.match(denied(access.check(req('gateway-1', { max_tokens: 450 }))), { code: 'E_TOO_LARGE', message: /400 allowed \(limits.max_tokens\)/ });
  t.equal(allowed(access.check(req('d', { max_tokens: 100 }))).max_tokens, 100);
  t.equal(allowed(access.check(req('d'))).max_tokens, 256, 'no max_tokens: the role\'s');
});

t.test('a model the roles do not list is E_FORBIDDEN', async (t) => {
  const { access } = setup();
  t.match(denied(access.check(req('line-2-sensor-1', { model: 'full' }))), { code: 'E_FORBIDDEN', message: /model "full" is not allowed for device line-2-sensor-1 \(roles sensor allow lite, real-time\)/ });
  allowed(access.check(req('line-2-sensor-1', { model: 'lite' })));
  allowed(access.check(req('line-2-sensor-1')));
});

t.test('config references are checked at construction', async (t) => {
  const grants = new MemoryGrantStore();
  t.throws(() => new AccessControl({ config: { ...CONFIG, default_role: 'x' }, grants }), { code: 'E_CONFIG', message: /default_role "x"/ });
  t.throws(() => new AccessControl({ config: { ...CONFIG, devices: { a: ['x'] } }, grants }), { code: 'E_CONFIG', message: /access.devices."a": "x"/ });
  t.throws(() => new AccessControl({ config: { ...CONFIG, roles: { ...CONFIG.roles, bad: { models: [], routes: ['moon' as 'local'] } } }, grants }), { code: 'E_CONFIG' });
  t.throws(() => new AccessControl({ config: { ...CONFIG, roles: { ...CONFIG.roles, bad: { models: [], routes: [], requests_per_minute: 0 } } }, grants }), { code: 'E_CONFIG' });
  t.throws(() => new AccessControl({ config: { ...CONFIG, roles: { ...CONFIG.roles, bad: { models: [], routes: [], max_tokens: 1.5 } } }, grants }), { code: 'E_CONFIG' });
  t.throws(() => new AccessControl({ config: CONFIG, grants, limits: { max_payload_bytes: 0 } }), { code: 'E_CONFIG' });
});

t.test('the memory grant store: add replaces, list shows only active grants', async (t) => {
  const s = new MemoryGrantStore();
  s.add({ device: 'a', role: 'r', granted_at: 0, expires_at: 10 });
  s.add({ device: 'a', role: 'r', granted_at: 5, expires_at: 20 });
  s.add({ device: 'b', role: 'r', granted_at: 0, expires_at: 5 });
  t.same(s.list(6).map((g) => [g.device, g.expires_at]), [['a', 20]]);
  t.equal(s.revoke('b', undefined, 6), 0, 'an expired grant is removed but not counted');
  t.equal(s.list(0).length, 1);
});
