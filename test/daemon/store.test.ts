// The SQLite store: migrations, requests keyed by (device, id), the outbox and the answer cache.
import t from 'tap';
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cacheKey, isDeterministic, Store } from '../../src/store/index.js';

function tempDir(t: { teardown(fn: () => void): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-store-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const req = (id: string) => ({ device: 'd1', id, payload: '{}', replyTopic: 'r/d1', correlation: Buffer.from('c'), receivedAt: 1, deadlineAt: null });

t.test('the database is WAL with synchronous FULL, and migrated once', async (t) => {
  const dir = tempDir(t);
  Store.open(dir, { cacheEntries: 10 }).close();
  const db = new Database(join(dir, 'edgellm.db'));
  t.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  t.equal(db.pragma('user_version', { simple: true }), 4);
  db.close();
  Store.open(dir, { cacheEntries: 10 }).close(); // reopening does not migrate again
  t.pass();
});

t.test('a database from a newer edgellm is refused with E_STORE', async (t) => {
  const dir = tempDir(t);
  Store.open(dir, { cacheEntries: 10 }).close();
  const db = new Database(join(dir, 'edgellm.db'));
  db.pragma('user_version = 99');
  db.close();
  t.throws(() => Store.open(dir, { cacheEntries: 10 }), { code: 'E_STORE', message: /newer edgellm/ });
});

t.test('(device, id) is accepted once; finishing stores the reply and queues it in the outbox', async (t) => {
  const store = Store.open(tempDir(t), { cacheEntries: 10 });
  t.teardown(() => store.close());
  t.same(store.requests.accept(req('1')), { inserted: true });
  const again = store.requests.accept(req('1'));
  t.equal(again.inserted, false);
  t.same(store.requests.unanswered().map((r) => r.id), ['1']);
  store.requests.markRunning('d1', '1', 5);
  t.equal(store.requests.get('d1', '1')?.state, 'running');
  const msg = store.finish('d1', '1', 'done', { topic: 'r/d1', payload: '{"type":"done"}', correlation: Buffer.from('c') });
  t.equal(store.requests.get('d1', '1')?.reply, '{"type":"done"}');
  t.same(store.requests.unanswered(), []);
  t.same(store.outbox.pending().map((m) => [m.seq, m.topic, m.correlation?.toString()]), [[msg.seq, 'r/d1', 'c']]);
  store.outbox.acknowledged(msg.seq);
  t.equal(store.outbox.size(), 0);
  t.equal(store.requests.prune(Date.now() + 1), 1);
});

t.test('cache keys: equivalent requests share one, different ones never do', async (t) => {
  const m = { identity: 'gguf1:aaaa', contextSize: 2048 };
  const key = (r: Parameters<typeof cacheKey>[1], model = m) => cacheKey(model, r);
  const base = { prompt: 'Summarize: spindle hot', max_tokens: 64 };
  const same: Array<[string, object, object]> = [
    ['greedy ignores the sampler knobs and the seed', { ...base, temperature: 0 }, { ...base, temperature: 0, top_k: 5, top_p: 0.5, min_p: 0.2, seed: 11 }],
    ["an absent sampling parameter is the engine's default", { ...base, seed: 1 }, { ...base, seed: 1, temperature: 0.8, top_k: 40, top_p: 0.95, min_p: 0.05 }],
    ['stop strings are a set', { ...base, temperature: 0, stop: ['b', 'a', 'b'] }, { ...base, temperature: 0, stop: ['a', 'b'] }],
    ['no stop strings, however spelled', { ...base, temperature: 0, stop: [] }, { ...base, temperature: 0 }],
    ['undefined fields are absent fields', { ...base, temperature: 0, top_k: undefined }, { ...base, temperature: 0 }],
  ];
  for (const [why, a, b] of same) t.equal(key(a), key(b), why);
  const differ: Array<[string, object, object, typeof m?]> = [
    ['prompt vs the same text as a chat', { prompt: 'hi', temperature: 0 }, { messages: [{ role: 'user', content: 'hi' }], temperature: 0 }],
    ['a message role', { messages: [{ role: 'user', content: 'hi' }], temperature: 0 }, { messages: [{ role: 'system', content: 'hi' }], temperature: 0 }],
    ['message boundaries', { messages: [{ role: 'user', content: 'a b' }], temperature: 0 }, { messages: [{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }], temperature: 0 }],
    ['the prompt', { ...base, temperature: 0 }, { ...base, prompt: 'Summarize: spindle cold', temperature: 0 }],
    ['max_tokens', { ...base, temperature: 0 }, { ...base, max_tokens: 65, temperature: 0 }],
    ['greedy vs seeded', { ...base, temperature: 0 }, { ...base, seed: 0 }],
    ['a sampling parameter away from its default', { ...base, seed: 1 }, { ...base, seed: 1, top_k: 41 }],
    ['the temperature', { ...base, seed: 1, temperature: 0.7 }, { ...base, seed: 1, temperature: 0.71 }],
    ['a stop string', { ...base, temperature: 0, stop: ['a'] }, { ...base, temperature: 0, stop: ['a', 'b'] }],
    ['the model file, same name', { ...base, temperature: 0 }, { ...base, temperature: 0 }, { ...m, identity: 'gguf1:bbbb' }],
    ['the context size', { ...base, temperature: 0 }, { ...base, temperature: 0 }, { ...m, contextSize: 4096 }],
  ];
  for (const [why, a, b, other] of differ) t.not(key(a), key(b, other ?? m), why);
});

t.test('the cache keys on the deciding fields and keeps the most recently used entries', async (t) => {
  t.ok(isDeterministic({ temperature: 0 }));
  t.ok(isDeterministic({ temperature: 0.7, seed: 3 }));
  t.notOk(isDeterministic({ temperature: 0.7 }));
  t.notOk(isDeterministic({}));
  const m = { identity: 'gguf1:aaaa', contextSize: 2048 };
  t.equal(cacheKey(m, { prompt: 'a', temperature: 0 }), cacheKey(m, { prompt: 'a', temperature: 0, seed: 9 }), 'seed is irrelevant at temperature 0');
  t.not(cacheKey(m, { prompt: 'a', temperature: 0 }), cacheKey({ ...m, identity: 'gguf1:bbbb' }, { prompt: 'a', temperature: 0 }), 'model matters');
  t.not(cacheKey(m, { prompt: 'a', seed: 1 }), cacheKey(m, { prompt: 'a', seed: 2 }), 'seed matters otherwise');
  const store = Store.open(tempDir(t), { cacheEntries: 2 });
  t.teardown(() => store.close());
  const answer = (text: string) => ({ text, finish_reason: 'stop' as const, usage: { prompt_tokens: 1, completion_tokens: 1 } });
  store.cache.put('k1', 'm', answer('one'));
  await new Promise((r) => setTimeout(r, 5));
  store.cache.put('k2', 'm', answer('two'));
  await new Promise((r) => setTimeout(r, 5));
  t.equal(store.cache.get('k1')?.text, 'one'); // k1 is now the most recently used
  await new Promise((r) => setTimeout(r, 5));
  store.cache.put('k3', 'm', answer('three'));
  t.equal(store.cache.get('k2'), undefined, 'the least recently used went');
  t.equal(store.cache.get('k3')?.text, 'three');
  t.equal(store.cache.hitRate(), 2 / 3);
});
