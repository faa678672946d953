// `edgellm audit` as an operator runs it: the built CLI in its own process against a database that a
// "daemon" (a Store in this process) holds open and writes. Grants and revokes: grant-cli.test.ts.
import t from 'tap';
import Database from 'better-sqlite3';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { assertCliBuilt, cli, root, run } from './fixtures/paths.js';
import { daemonState, jsonLines } from './helpers/state-dir.js';

t.before(assertCliBuilt);

const HOUR = 3_600_000;

t.test('audit --since and --device select records; --json lines parse; the table has one row each', async (t) => {
  const { stateDir, store } = daemonState(t);
  const now = Date.now();
  store.audit.write({ type: 'request', time: now - 3 * HOUR, device: 'a', id: 'old', allowed: true, outcome: 'ok', model: 'm', route: 'local' });
  store.audit.write({ type: 'request', time: now - 10 * 60_000, device: 'a', id: 'new', allowed: true, outcome: 'ok', model: 'm', route: 'local', route_reason: 'no upstream\nconfigured', prompt_tokens: 5, completion_tokens: 32 });
  store.audit.write({ type: 'request', time: now - 5 * 60_000, device: 'b', id: 'no', allowed: false, outcome: 'denied', denied: { code: 'E_FORBIDDEN', message: 'model "x" is not allowed' } });
  store.audit.write({ type: 'config', time: now - 60_000, source: '/etc/edgellm/config.yaml', digest: 'f'.repeat(64), config: {} });

  const since = run(['audit', '--since', '1h', '--json', '--state-dir', stateDir]);
  t.equal(since.status, 0, since.stderr);
  t.same(jsonLines(since.stdout).map((r) => (r.type === 'request' ? r.id : r.type)), ['new', 'no', 'config']);
  const dev = run(['audit', '--device', 'a', '--json', '--state-dir', stateDir]);
  t.same(jsonLines(dev.stdout).map((r) => (r.type === 'request' ? r.id : r.type)), ['old', 'new']);
  const both = run(['audit', '--device', 'a', '--since', '1h', '--json', '--state-dir', stateDir]);
  t.same(jsonLines(both.stdout).map((r) => (r.type === 'request' ? r.id : r.type)), ['new']);
  const iso = new Date(now - 6 * 60_000).toISOString();
  t.same(jsonLines(run(['audit', '--since', iso, '--json', '--state-dir', stateDir]).stdout).length, 2, '--since takes an ISO time');
  t.same(jsonLines(run(['audit', '--limit', '1', '--json', '--state-dir', stateDir]).stdout).map((r) => r.type), ['config'], '--limit keeps the newest');
  t.same(jsonLines(run(['audit', '--type', 'request', '--since', '1h', '--json', '--state-dir', stateDir]).stdout).length, 2);

  const table = run(['audit', '--state-dir', stateDir]);
  t.equal(table.status, 0, table.stderr);
  const lines = table.stdout.trim().split('\n');
  t.equal(lines.length, 5, 'a header and one line per record (newlines inside reasons are flattened)');
  t.match(lines[0], /^TIME\s+TYPE\s+DEVICE\s+ID\s+OUTCOME\s+DETAIL$/);
  t.match(lines[2], /^\S+Z\s+request\s+a\s+new\s+ok\s+model m, route local \(no upstream configured\), 5\+32 tokens$/);
  t.match(lines[3], /request\s+b\s+no\s+denied\s+E_FORBIDDEN: model "x" is not allowed$/);
  t.match(lines[4], /config\s+loaded\s+\/etc\/edgellm\/config.yaml \(sha256 ffffffffffff\)$/);
  t.equal(run(['audit', '--device', 'nobody', '--state-dir', stateDir]).stdout, 'no audit records match\n');
});

t.test('a request with image or audio parts: the table and --json show their kinds and sizes', async (t) => {
  const { stateDir, store } = daemonState(t);
  const media = [{ kind: 'image' as const, type: 'image/png', bytes: 48211 }, { kind: 'audio' as const, type: 'wav', bytes: 1644 }];
  store.audit.write({ type: 'request', time: Date.now(), device: 'cam-1', id: 'mm', allowed: true, outcome: 'ok', model: 'vision', route: 'cloud', route_reason: 'multimodal input (image, audio)', media });
  const table = run(['audit', '--state-dir', stateDir]);
  t.match(table.stdout, /cam-1\s+mm\s+ok\s+model vision, route cloud \(multimodal input \(image, audio\)\), parts image image\/png 48211 B \+ audio wav 1644 B$/m);
  t.match(jsonLines(run(['audit', '--json', '--state-dir', stateDir]).stdout)[0], { type: 'request', media });
});

t.test('without --since or --limit audit shows the newest 100 and says how many there are', async (t) => {
  const { stateDir, store } = daemonState(t);
  const now = Date.now();
  for (let i = 0; i < 105; i++) store.audit.write({ type: 'request', time: now - (105 - i) * 1000, device: 'd', id: String(i), allowed: true, outcome: 'ok' });
  const r = run(['audit', '--json', '--state-dir', stateDir]);
  t.equal(jsonLines(r.stdout).length, 100);
  t.equal((jsonLines(r.stdout)[0] as { id: string }).id, '5');
  t.match(r.stderr, /the newest 100 of 105 records; use --since or --limit/);
  t.equal(jsonLines(run(['audit', '--since', '1d', '--json', '--state-dir', stateDir]).stdout).length, 105, '--since lifts the default limit');
});

t.test('audit | head: a reader that stops early ends the command quietly with exit 0', async (t) => {
  const { stateDir, store } = daemonState(t);
  const now = Date.now();
  store.atomically(() => {
    for (let i = 0; i < 20_000; i++) store.audit.write({ type: 'request', time: now - i, device: 'd', id: String(i), allowed: true, outcome: 'ok' });
  });
  const child = spawn(process.execPath, [cli, 'audit', '--since', '1d', '--json', '--state-dir', stateDir], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  child.stdout.once('data', () => child.stdout.destroy());
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  t.equal(code, 0, stderr);
  t.equal(stderr, '');
});

t.test('a write lock held past busy_timeout is E_STORE saying to try again, and nothing is half-written', async (t) => {
  const { stateDir, store } = daemonState(t);
  const other = new Database(join(stateDir, 'edgellm.db'));
  t.teardown(() => other.close());
  other.exec('BEGIN IMMEDIATE');
  const r = run(['grant', 'd', 'local', '--for', '1h', '--state-dir', stateDir]);
  other.exec('ROLLBACK');
  t.equal(r.status, 2, r.stderr);
  t.match(r.stderr, /^edgellm: E_STORE: the database in .* refused: database is locked \(another process held a write lock for more than 5 s: try again\)\n$/);
  t.same(store.grants.list(0), []);
  t.equal(store.audit.count(), 0);
});
