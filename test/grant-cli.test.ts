// `edgellm grant`, `revoke` and `grants` as an operator runs them: the built CLI in its own process
// against a database that a "daemon" (a Store in this process) holds open. `edgellm audit`: audit-cli.test.ts.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { assertCliBuilt, root, run } from './fixtures/paths.js';
import { daemonState, jsonLines, runEnv } from './helpers/state-dir.js';

t.before(assertCliBuilt);

const HOUR = 3_600_000;

t.test('grant takes effect on the running daemon\'s next check, revoke ends it, and both are audited', async (t) => {
  const { stateDir, store, access } = daemonState(t);
  t.same(access.permissions('press-4').routes, ['local']);

  const before = Date.now();
  const g = run(['grant', 'press-4', 'cloud', '--for', '2h', '--state-dir', stateDir]);
  t.equal(g.status, 0, g.stderr);
  t.match(g.stdout, /^granted cloud to press-4 until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(2h from now\)\n$/);
  t.match(g.stderr, /without --config the role "cloud" was not checked/);
  t.same(access.permissions('press-4').routes, ['local', 'cloud'], 'seen without a restart');
  const [grant] = store.grants.list(Date.now());
  t.ok(grant && grant.expires_at >= before + 2 * HOUR && grant.expires_at <= Date.now() + 2 * HOUR, 'expires 2 h after it was granted');
  t.equal(g.stdout.match(/until (\S+)/)![1], new Date(grant!.expires_at).toISOString().replace(/\.\d{3}Z$/, 'Z'), 'the printed expiry is the stored one');

  const r = run(['revoke', 'press-4', 'cloud', '--state-dir', stateDir]);
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout, "revoked press-4's grant of cloud\n");
  t.same(access.permissions('press-4').routes, ['local'], 'the revoke is seen at once');

  const again = run(['revoke', 'press-4', '--state-dir', stateDir]);
  t.equal(again.status, 0, 'nothing to revoke is not an error');
  t.equal(again.stdout, 'press-4 had no active grant: nothing revoked\n');

  const a = run(['audit', '--json', '--state-dir', stateDir]);
  t.equal(a.status, 0, a.stderr);
  const records = jsonLines(a.stdout);
  t.same(records.map((x) => [x.type, 'role' in x ? x.role : '', 'removed' in x ? x.removed : '']), [['grant', 'cloud', ''], ['revoke', 'cloud', 1], ['revoke', '*', 0]]);
  const me = userInfo().username;
  for (const x of records) t.match((x as { by?: string }).by, new RegExp(me), 'who: the OS user');
  t.same(records.map((x) => x.seq), [1, 2, 3]);
});

t.test('grant again replaces the expiry and says so; grants lists what is active', async (t) => {
  const { stateDir } = daemonState(t);
  t.equal(run(['grant', 'a', 'cloud', '--for', '1d', '--state-dir', stateDir]).status, 0);
  const again = run(['grant', 'a', 'cloud', '--for', '30m', '--state-dir', stateDir]);
  t.match(again.stdout, /\(30m from now\) \(replacing the grant that ran until \S+Z\)/);
  t.equal(run(['grant', 'b', 'local', '--for', '1h30m', '--state-dir', stateDir]).status, 0);
  const list = run(['grants', '--state-dir', stateDir]);
  t.equal(list.status, 0, list.stderr);
  const lines = list.stdout.trim().split('\n');
  t.match(lines[0], /^DEVICE\s+ROLE\s+EXPIRES\s+LEFT\s+BY$/);
  t.match(lines[1], /^a\s+cloud\s+\S+Z\s+(29m\d*s?|30m)\s+\S/);
  t.match(lines[2], /^b\s+local\s+\S+Z\s+1h(29|30)m\s+\S/);
  const json = jsonLines(run(['grants', '--device', 'b', '--json', '--state-dir', stateDir]).stdout);
  t.same(json.map((g) => [(g as unknown as { device: string }).device, (g as unknown as { role: string }).role]), [['b', 'local']]);
  t.equal(run(['grants', '--device', 'zzz', '--state-dir', stateDir]).stdout, 'no active grants for zzz\n');
  t.equal(run(['revoke', 'a', '--state-dir', stateDir]).stdout, 'revoked 1 active grant of a (cloud)\n', 'revoke DEVICE names what it ended');
});

t.test('state_dir comes from --config or EDGELLM_STATE_DIR when --state-dir is absent', async (t) => {
  const { dir, stateDir, store } = daemonState(t);
  const config = join(dir, 'config.yaml');
  writeFileSync(config, `state_dir: ${stateDir}\n`);
  const g = run(['grant', 'dev', 'local', '--for', '10m', '--config', config]);
  t.equal(g.status, 0, g.stderr);
  t.equal(g.stderr, '', 'with --config the role was checked, so no note');
  const e = runEnv(['revoke', 'dev', 'local'], { EDGELLM_STATE_DIR: stateDir });
  t.equal(e.status, 0, e.stderr);
  t.equal(e.stdout, "revoked dev's grant of local\n");
  t.equal(store.audit.count(), 2);
});

t.test('a bad duration, an unknown role and a wildcard device are E_BAD_ARGUMENT, and nothing is written', async (t) => {
  const { dir, stateDir, store } = daemonState(t);
  const config = join(dir, 'config.yaml');
  writeFileSync(config, `state_dir: ${stateDir}\n`);
  for (const [value, re] of [
    ['2x', /--for takes a duration such as 30s, 90m, 2h, 1d or 1h30m .*got "2x"/],
    ['400d', /--for 400d is longer than the most allowed, 365d/],
  ] as const) {
    const r = run(['grant', 'dev', 'local', '--for', value, '--config', config]);
    t.equal(r.status, 2, value);
    t.match(r.stderr, new RegExp(`^edgellm: E_BAD_ARGUMENT: ${re.source}`), value);
  }
  const noFor = run(['grant', 'dev', 'local', '--config', config]);
  t.match(noFor.stderr, /E_BAD_ARGUMENT: a grant needs --for DURATION/);
  const role = run(['grant', 'dev', 'admin', '--for', '2h', '--config', config]);
  t.equal(role.status, 2);
  t.match(role.stderr, /^edgellm: E_BAD_ARGUMENT: there is no role "admin" in access.roles of .*config.yaml: use one of local\n$/);
  const glob = run(['grant', 'line-*', 'local', '--for', '2h', '--config', config]);
  t.match(glob.stderr, /E_BAD_ARGUMENT: "line-\*" is not a device id/);
  const since = run(['audit', '--since', 'yesterday', '--state-dir', stateDir]);
  t.match(since.stderr, /E_BAD_ARGUMENT: --since takes a duration back from now .* or an ISO 8601 time/);
  t.match(run(['audit', '--type', 'login', '--state-dir', stateDir]).stderr, /E_BAD_ARGUMENT: --type takes one of request, grant, revoke, config/);
  t.same(store.grants.list(0), []);
  t.equal(store.audit.count(), 0, 'refused commands leave no audit records');
});

t.test('a missing state dir or database is E_STORE naming it, and nothing is created', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-grant-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const args of [['grant', 'd', 'local', '--for', '1h'], ['audit']]) {
    const r = run([...args, '--state-dir', join(dir, 'missing')]);
    t.equal(r.status, 2, args[0]!);
    t.match(r.stderr, /^edgellm: E_STORE: no edgellm database: .*missing does not exist\. Point --state-dir/, args[0]!);
  }
  mkdirSync(join(dir, 'empty'));
  t.match(run(['audit', '--state-dir', join(dir, 'empty')]).stderr, /E_STORE: no edgellm database: .*empty has no edgellm.db/);
  t.equal(spawnSync('ls', [join(dir, 'empty')], { encoding: 'utf8' }).stdout, '', 'no database was created');
});

t.test("the README's `grant press-4 cloud` works against the shipped /etc/edgellm/config.yaml", async (t) => {
  const { dir, stateDir, store } = daemonState(t);
  const shipped = readFileSync(join(root, 'systemd', 'config.yaml'), 'utf8');
  t.match(shipped, /^state_dir: \/var\/lib\/edgellm\b/m);
  const config = join(dir, 'config.yaml');
  writeFileSync(config, shipped.replace(/^state_dir: \/var\/lib\/edgellm/m, `state_dir: ${stateDir}`));
  const g = run(['grant', 'press-4', 'cloud', '--for', '2h', '--config', config]);
  t.equal(g.status, 0, g.stderr);
  t.equal(g.stderr, '', 'the role was checked against the config');
  t.same(store.grants.list(Date.now()).map((x) => [x.device, x.role]), [['press-4', 'cloud']]);
  t.equal(run(['revoke', 'press-4', 'cloud', '--config', config]).status, 0);
});
