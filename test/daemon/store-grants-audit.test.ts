// Grants and the audit log in SQLite: expiry, immediate revokes, two handles on one file (the
// daemon and the CLI), the append-only triggers, and the retention prune as the only way out.
import t from 'tap';
import Database from 'better-sqlite3';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config.js';
import type { AuditRecord, RequestAudit } from '../../src/policy/audit.js';
import { migrations } from '../../src/store/database.js';
import { Store } from '../../src/store/index.js';
import { localCloudAccess } from '../helpers/state-dir.js';

const DAY = 86_400_000;

function tempDir(t: { teardown(fn: () => void): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-grants-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function open(t: { teardown(fn: () => void): void }, dir: string, opts: Partial<Parameters<typeof Store.open>[1]> = {}) {
  const store = Store.open(dir, { cacheEntries: 10, ...opts });
  t.teardown(() => store.close());
  return store;
}

/** A second connection to the same file, as someone with sqlite3 would have. */
function raw(t: { teardown(fn: () => void): void }, dir: string) {
  const db = new Database(join(dir, 'edgellm.db'));
  t.teardown(() => db.close());
  return db;
}

const request = (device: string, id: string, time: number, extra: Partial<RequestAudit> = {}): RequestAudit => ({
  type: 'request', time, device, id, allowed: true, outcome: 'ok', prompt_tokens: 5, completion_tokens: 7, ...extra,
});

t.test('a grant is active until its expiry and gone at it', async (t) => {
  const store = open(t, tempDir(t));
  store.grants.add({ device: 'press-4', role: 'cloud', granted_at: 1000, expires_at: 5000, by: 'alice' });
  t.same(store.grants.active('press-4', 4999), [{ device: 'press-4', role: 'cloud', granted_at: 1000, expires_at: 5000, by: 'alice' }]);
  t.same(store.grants.active('press-4', 5000), [], 'expires_at is the first moment it no longer holds');
  t.same(store.grants.list(4999).map((g) => g.device), ['press-4']);
  t.same(store.grants.list(5000), []);
  t.same(store.grants.active('press-5', 4999), [], 'other devices have none');
});

t.test('granting a (device, role) again replaces its expiry and granter', async (t) => {
  const store = open(t, tempDir(t));
  store.grants.add({ device: 'd', role: 'cloud', granted_at: 0, expires_at: 10_000, by: 'alice' });
  store.grants.add({ device: 'd', role: 'cloud', granted_at: 100, expires_at: 2_000 });
  t.same(store.grants.list(0), [{ device: 'd', role: 'cloud', granted_at: 100, expires_at: 2_000 }]);
});

t.test('revoke ends grants at once and counts only the active ones', async (t) => {
  const store = open(t, tempDir(t));
  store.grants.add({ device: 'd', role: 'cloud', granted_at: 0, expires_at: 10_000 });
  store.grants.add({ device: 'd', role: 'big', granted_at: 0, expires_at: 10_000 });
  store.grants.add({ device: 'd', role: 'old', granted_at: 0, expires_at: 100 });
  store.grants.add({ device: 'e', role: 'cloud', granted_at: 0, expires_at: 10_000 });
  t.equal(store.grants.revoke('d', 'cloud', 500), 1);
  t.same(store.grants.active('d', 500).map((g) => g.role), ['big']);
  t.equal(store.grants.revoke('d', 'cloud', 500), 0, 'revoking again removes nothing');
  t.equal(store.grants.revoke('d', undefined, 500), 1, 'every role: big is active, old had expired');
  t.same(store.grants.active('d', 0), [], 'the expired one went too');
  t.same(store.grants.active('e', 500).map((g) => g.role), ['cloud'], 'other devices keep theirs');
});

t.test('forgetExpired deletes only grants that have expired', async (t) => {
  const store = open(t, tempDir(t));
  store.grants.add({ device: 'd', role: 'a', granted_at: 0, expires_at: 100 });
  store.grants.add({ device: 'd', role: 'b', granted_at: 0, expires_at: 200 });
  t.equal(store.grants.forgetExpired(100), 1);
  t.same(store.grants.list(0).map((g) => g.role), ['b']);
});

t.test('a grant written through one handle is seen by the other handle\'s next read (daemon and CLI)', async (t) => {
  const dir = tempDir(t);
  const daemon = open(t, dir);
  const access = localCloudAccess(daemon);
  t.same(access.permissions('press-4').routes, ['local']);
  const cli = open(t, dir);
  const now = Date.now();
  cli.grants.add({ device: 'press-4', role: 'cloud', granted_at: now, expires_at: now + 3_600_000 });
  t.same(access.permissions('press-4').routes, ['local', 'cloud'], 'the grant took effect without reopening');
  t.equal(cli.grants.revoke('press-4', 'cloud', Date.now()), 1);
  t.same(access.permissions('press-4').routes, ['local'], 'and the revoke too');
  cli.audit.write({ type: 'grant', time: now, device: 'press-4', role: 'cloud', expires_at: now + 1 });
  t.equal(daemon.audit.count(), 1, 'audit records written by one handle are read by the other');
});

t.test('the audit log keeps each record whole and filters by time, device and type', async (t) => {
  const store = open(t, tempDir(t));
  const now = Date.now();
  const records: AuditRecord[] = [
    request('a', '1', now - 3 * 3_600_000, { model: 'm', route: 'local', route_reason: 'no upstream configured', roles: ['local'] }),
    request('b', '2', now - 2 * 3_600_000, { allowed: false, outcome: 'denied', denied: { code: 'E_FORBIDDEN', message: 'no' } }),
    { type: 'grant', time: now - 3_600_000, device: 'a', role: 'cloud', expires_at: now, by: 'alice' },
    { type: 'revoke', time: now - 1_800_000, device: 'a', role: '*', removed: 1, by: 'bob' },
    { type: 'config', time: now - 60_000, source: '/etc/edgellm/config.yaml', digest: 'ab'.repeat(32), config: { node_id: 'pi-1' } },
  ];
  for (const r of records) store.audit.write(r);
  const all = store.audit.query();
  t.same(all.map((e) => e.record), records, 'oldest first, every field back as written');
  t.same(all.map((e) => e.seq), [1, 2, 3, 4, 5]);
  t.same(store.audit.query({ device: 'a' }).map((e) => e.record.type), ['request', 'grant', 'revoke']);
  t.same(store.audit.query({ since: now - 2 * 3_600_000 }).map((e) => e.seq), [2, 3, 4, 5], 'since is inclusive');
  t.same(store.audit.query({ type: 'request' }).map((e) => e.seq), [1, 2]);
  t.same(store.audit.query({ limit: 2 }).map((e) => e.seq), [4, 5], 'a limit keeps the newest, still oldest first');
  t.equal(store.audit.count({ device: 'a' }), 3);
});

t.test('prompt text is dropped unless audit.store_prompts is on', async (t) => {
  const dir = tempDir(t);
  const now = Date.now();
  const off = open(t, dir);
  off.audit.write(request('d', '1', now, { prompt: 'secret plan' }));
  t.equal((off.audit.query()[0]!.record as RequestAudit).prompt, undefined);
  t.notMatch(JSON.stringify(raw(t, dir).prepare('SELECT record FROM audit').all()), /secret plan/, 'not in the file either');
  const on = open(t, dir, { auditPrompts: true });
  on.audit.write(request('d', '2', now, { prompt: 'kept' }));
  t.equal((on.audit.query({ limit: 1 })[0]!.record as RequestAudit).prompt, 'kept');
});

t.test('write() never throws: a record the table refuses is counted and reported', async (t) => {
  const errors: string[] = [];
  const store = open(t, tempDir(t), { onAuditError: (err, r) => errors.push(`${r.type}: ${err.message}`) });
  t.doesNotThrow(() => store.audit.write(request('d', '1', 0)));
  t.equal(store.audit.failures, 1);
  t.match(errors, [/^request: cannot append a request record to the audit log: CHECK constraint failed/]);
  t.throws(() => store.audit.append(request('d', '1', 0)), { code: 'E_STORE' }, 'append() does throw');
});

t.test('the audit log is append-only: UPDATE, DELETE and replacing INSERTs are refused', async (t) => {
  const dir = tempDir(t);
  const store = open(t, dir);
  const old = Date.now() - 400 * DAY;
  store.audit.write(request('d', '1', old));
  store.audit.write(request('d', '2', Date.now()));
  const db = raw(t, dir);
  t.throws(() => db.prepare("UPDATE audit SET device = 'x'").run(), /append-only: rows cannot be changed/);
  t.throws(() => db.prepare('DELETE FROM audit WHERE seq = 2').run(), /rows leave only through the retention prune/);
  t.throws(() => db.prepare('DELETE FROM audit').run(), /retention prune/, 'even a 400-day-old row stays outside a prune');
  t.throws(
    () => db.prepare("INSERT OR REPLACE INTO audit (seq, time, type, device, record) VALUES (1, 1, 'request', 'x', '{}')").run(),
    /rows cannot be replaced/,
  );
  t.throws(
    () => db.prepare("INSERT INTO audit (seq, time, type, device, record) VALUES (1, 1, 'request', 'x', '{}') ON CONFLICT (seq) DO UPDATE SET device = 'x'").run(),
    /append-only/,
  );
  t.throws(() => db.prepare('UPDATE audit_prune SET prune_before = ?').run(Date.now()), /at least one day/, 'the gate cannot open on recent rows');
  t.throws(() => db.prepare('DELETE FROM audit_prune').run(), /cannot be deleted/);
  t.throws(() => db.prepare('INSERT OR REPLACE INTO audit_prune (id, prune_before) VALUES (1, 9e15)').run(), /one row/);
  t.same(store.audit.query().map((e) => [e.seq, (e.record as RequestAudit).device]), [[1, 'd'], [2, 'd']], 'both rows as written');
});

t.test('prune removes what is older than the retention and nothing else, then closes the gate', async (t) => {
  const dir = tempDir(t);
  const store = open(t, dir);
  const now = Date.now();
  for (const [id, age] of [['a', 100 * DAY], ['b', 31 * DAY], ['c', 29 * DAY], ['d', 0]] as const) store.audit.write(request('x', id, now - age));
  t.equal(store.audit.prune(30), 2);
  t.same(store.audit.query().map((e) => (e.record as RequestAudit).id), ['c', 'd']);
  t.equal(store.audit.prune(30), 0, 'a second prune finds nothing');
  t.equal((raw(t, dir).prepare('SELECT prune_before AS p FROM audit_prune').get() as { p: number }).p, 0, 'the gate is closed again');
  store.audit.write(request('x', 'e', now - 60 * DAY));
  t.throws(() => raw(t, dir).prepare('DELETE FROM audit').run(), /retention prune/, 'outside prune() old rows are protected again');
  t.throws(() => store.audit.prune(0.5), { code: 'E_BAD_ARGUMENT' }, 'less than a day is refused');
});

t.test('a schema-1 database (before grants and audit) is migrated and keeps its rows', async (t) => {
  const dir = tempDir(t);
  mkdirSync(dir, { recursive: true });
  const db = new Database(join(dir, 'edgellm.db'));
  db.exec(migrations[0]!);
  db.pragma('user_version = 1');
  db.prepare("INSERT INTO outbox (topic, payload, created_at) VALUES ('t', 'p', 1)").run();
  db.close();
  const store = open(t, dir);
  t.equal(store.outbox.size(), 1);
  store.grants.add({ device: 'd', role: 'r', granted_at: 0, expires_at: 10 });
  t.equal(store.grants.list(0).length, 1);
  t.equal(raw(t, dir).pragma('user_version', { simple: true }), migrations.length);
});

t.test('without create, a missing state dir or database is an E_STORE that says what to do', async (t) => {
  const dir = tempDir(t);
  t.throws(() => Store.open(join(dir, 'nope'), { cacheEntries: 1, create: false }), { code: 'E_STORE', message: /nope does not exist.*--state-dir/ });
  mkdirSync(join(dir, 'empty'));
  t.throws(() => Store.open(join(dir, 'empty'), { cacheEntries: 1, create: false }), { code: 'E_STORE', message: /empty has no edgellm.db/ });
});

t.test('audit.retention_days defaults to 90 and audit.store_prompts to false; a retention under a day is refused', async (t) => {
  const c = loadConfig({ env: {} });
  t.equal(c.audit.retention_days, 90);
  t.equal(c.audit.store_prompts, false);
  t.equal(loadConfig({ env: { EDGELLM_AUDIT_RETENTION_DAYS: '30', EDGELLM_AUDIT_STORE_PROMPTS: 'true' } }).audit.retention_days, 30);
  t.throws(() => loadConfig({ env: { EDGELLM_AUDIT_RETENTION_DAYS: '0' } }), { code: 'E_CONFIG', message: /audit\.retention_days/ });
});
