// The upstream client against a real HTTP server on loopback speaking OpenAI's streaming protocol
// (src/policy/upstream.ts), and the API key's handling (src/secret.ts).
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { EdgeError } from '../src/errors.js';
import { UpstreamClient, UpstreamError, readApiKey, redact, redactUrl, Secret, type UpstreamResult } from '../src/policy/upstream.js';
import { MemoryAuditSink, configLoadRecord } from '../src/policy/audit.js';
import { CLOUD_CHUNKS, CLOUD_TEXT, closedPortUrl, startFakeUpstream, type FakeUpstream } from './helpers/policy-fakes.js';

const KEY = 'sk-test-0123456789-SECRET';
const FAST = { connect_ms: 500, first_byte_ms: 300, idle_ms: 300, total_ms: 3000 };

let server: FakeUpstream;
t.before(async () => {
  server = await startFakeUpstream();
});
t.teardown(() => server.close());

function client(timeouts: Partial<typeof FAST> = FAST, url = server.url): UpstreamClient {
  return new UpstreamClient({ url, model: 'big-model', apiKey: new Secret(KEY), timeouts });
}

async function drain(reply: AsyncIterable<string> & { result: Promise<UpstreamResult> }): Promise<{ chunks: string[]; result: UpstreamResult }> {
  const chunks: string[] = [];
  for await (const c of reply) chunks.push(c);
  return { chunks, result: await reply.result };
}

/** Runs the request and returns the E_UPSTREAM error it must fail with, and how long that took. */
async function failure(reply: AsyncIterable<string>): Promise<{ err: UpstreamError; ms: number; chunks: string[] }> {
  const t0 = Date.now();
  const chunks: string[] = [];
  try {
    for await (const c of reply) chunks.push(c);
  } catch (err) {
    if (!(err instanceof UpstreamError)) throw err;
    return { err, ms: Date.now() - t0, chunks };
  }
  throw new Error(`expected E_UPSTREAM, got chunks ${JSON.stringify(chunks)}`);
}

t.test('a streamed reply is relayed chunk by chunk and ends with text, finish_reason and usage', async (t) => {
  server.mode = 'normal';
  const { chunks, result } = await drain(client().chat({ prompt: 'Hi', max_tokens: 16, temperature: 0 }));
  t.same(chunks, CLOUD_CHUNKS);
  t.equal(result.text, CLOUD_TEXT);
  t.equal(result.finish_reason, 'stop');
  t.same(result.usage, { prompt_tokens: 11, completion_tokens: 5 });
  t.equal(result.model, 'big-model');
  t.equal(result.chunks, 5);
  const body = server.bodies.at(-1) as Record<string, unknown>;
  t.match(body, { model: 'big-model', stream: true, max_tokens: 16, temperature: 0, messages: [{ role: 'user', content: 'Hi' }] });
  t.equal(server.authorizations.at(-1), `Bearer ${KEY}`, 'the key goes in the Authorization header');
});

t.test('finish_reason length is reported; a chat is sent as messages; no key means no Authorization header', async (t) => {
  server.mode = 'normal';
  const c = new UpstreamClient({ url: server.url + '/', model: 'big-model' });
  const { result } = await drain(c.chat({ messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'Hi' }], max_tokens: 3 }));
  t.equal(result.finish_reason, 'length');
  t.equal(result.upstream_finish_reason, 'length');
  t.same((server.bodies.at(-1) as { messages: unknown }).messages, [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'Hi' }]);
  t.equal(server.authorizations.at(-1), undefined);
});

t.test('a server that ignores stream: true and answers JSON still gives the text', async (t) => {
  server.mode = 'json';
  const { chunks, result } = await drain(client().chat({ prompt: 'Hi' }));
  t.same(chunks, [CLOUD_TEXT]);
  t.same(result.usage, { prompt_tokens: 11, completion_tokens: 5 });
});

t.test('HTTP 500 is E_UPSTREAM naming the status, with the key masked even where the server echoed it', async (t) => {
  server.mode = '500';
  const { err } = await failure(client().chat({ prompt: 'Hi' }));
  t.equal(err.code, 'E_UPSTREAM');
  t.equal(err.failure, 'http');
  t.equal(err.status, 500);
  t.match(err.message, /answered HTTP 500: internal error/);
  t.notMatch(err.message, KEY);
  t.match(err.message, /\[redacted\]/);
});

t.test('a slow first byte times out after first_byte_ms', async (t) => {
  server.mode = 'slow-first-byte';
  server.first_byte_delay_ms = 1500;
  const { err, ms } = await failure(client({ ...FAST, first_byte_ms: 200 }).chat({ prompt: 'Hi' }));
  t.equal(err.failure, 'timeout');
  t.match(err.message, /first_byte_ms 200/);
  t.ok(ms < 1000, `failed after ${ms} ms`);
});

t.test('a slow first byte within first_byte_ms is fine', async (t) => {
  server.mode = 'slow-first-byte';
  server.first_byte_delay_ms = 100;
  const { result } = await drain(client({ ...FAST, first_byte_ms: 1000 }).chat({ prompt: 'Hi' }));
  t.equal(result.text, CLOUD_TEXT);
});

t.test('a stream cut midway is E_UPSTREAM after the chunks that arrived', async (t) => {
  server.mode = 'cut';
  const { err, chunks } = await failure(client().chat({ prompt: 'Hi' }));
  t.same(chunks, ['Hello', ' from']);
  t.match(err.message, /cut after 2 chunks|mid-reply after 2 chunks/);
});

t.test('a stream that stalls times out after idle_ms', async (t) => {
  server.mode = 'stall';
  const { err, ms } = await failure(client({ ...FAST, idle_ms: 200 }).chat({ prompt: 'Hi' }));
  t.equal(err.failure, 'timeout');
  t.match(err.message, /idle_ms 200 after 2 chunks/);
  t.ok(ms < 1500, `failed after ${ms} ms`);
});

t.test('a server that never answers is bounded by first_byte_ms, and total_ms bounds everything', async (t) => {
  server.mode = 'hang';
  const a = await failure(client({ ...FAST, first_byte_ms: 200 }).chat({ prompt: 'Hi' }));
  t.match(a.err.message, /first_byte_ms/);
  const b = await failure(client({ connect_ms: 500, first_byte_ms: 5000, idle_ms: 5000, total_ms: 250 }).chat({ prompt: 'Hi' }));
  t.match(b.err.message, /total_ms 250/);
  t.ok(b.ms < 1500, `failed after ${b.ms} ms`);
});

t.test('an error event mid-stream and a stream without [DONE] are E_UPSTREAM', async (t) => {
  server.mode = 'error-event';
  const a = await failure(client().chat({ prompt: 'Hi' }));
  t.match(a.err.message, /error mid-stream: model overloaded/);
  server.mode = 'no-done';
  const b = await failure(client().chat({ prompt: 'Hi' }));
  t.match(b.err.message, /ended before \[DONE\] after 2 chunks/);
});

t.test('nothing listening is E_UPSTREAM connect at once', async (t) => {
  const { err, ms } = await failure(client(FAST, await closedPortUrl()).chat({ prompt: 'Hi' }));
  t.equal(err.failure, 'connect');
  t.match(err.message, /cannot reach the upstream \(ECONNREFUSED\)/);
  t.ok(ms < 1000);
});

t.test('aborting ends the reply with finish_reason cancelled and the text so far', async (t) => {
  server.mode = 'stall';
  const ctl = new AbortController();
  const reply = client({ ...FAST, idle_ms: 5000 }).chat({ prompt: 'Hi' }, { signal: ctl.signal });
  const chunks: string[] = [];
  for await (const c of reply) {
    chunks.push(c);
    if (chunks.length === 2) ctl.abort();
  }
  const r = await reply.result;
  t.equal(r.finish_reason, 'cancelled');
  t.equal(r.text, 'Hello from');
  const pre = new AbortController();
  pre.abort();
  t.equal((await client().chat({ prompt: 'Hi' }, { signal: pre.signal }).result).finish_reason, 'cancelled');
});

t.test('leaving the loop early cancels the request', async (t) => {
  server.mode = 'stall';
  const reply = client({ ...FAST, idle_ms: 5000 }).chat({ prompt: 'Hi' });
  for await (const c of reply) {
    t.equal(c, 'Hello');
    break;
  }
  t.equal((await reply.result).finish_reason, 'cancelled');
});

t.test('bad configuration is E_CONFIG naming the key, without the key or URL password', async (t) => {
  t.throws(() => new UpstreamClient({ url: 'not a url', model: 'm' }), { code: 'E_CONFIG' });
  t.throws(() => new UpstreamClient({ url: 'ftp://x/v1', model: 'm' }), { code: 'E_CONFIG', message: /http:\/\/ or https:\/\// });
  t.throws(() => new UpstreamClient({ url: 'http://x/v1', model: '' }), { code: 'E_CONFIG', message: /upstream.model/ });
  t.throws(() => new UpstreamClient({ url: 'http://x/v1', model: 'm', timeouts: { idle_ms: 0 } }), { code: 'E_CONFIG', message: /timeouts.idle_ms/ });
  const c = new UpstreamClient({ url: `https://user:${KEY}@api.example.com/v1?api_key=${KEY}`, model: 'm', apiKey: new Secret(KEY) });
  const described = JSON.stringify(c.describe());
  t.notMatch(described, KEY);
  t.match(c.describe(), { url: 'https://api.example.com/v1/chat/completions', api_key: 'set' });
});

t.test('the key is read from a file or the systemd credential; blank or absent means no key', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-key-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'key'), `  ${KEY}\n`);
  t.equal(readApiKey({ file: join(dir, 'key') })?.reveal(), KEY, 'whitespace trimmed');
  writeFileSync(join(dir, 'upstream-key'), '\n');
  t.equal(readApiKey({ env: { CREDENTIALS_DIRECTORY: dir } }), undefined, 'the unit\'s blank fallback = no key');
  writeFileSync(join(dir, 'other'), KEY);
  t.equal(readApiKey({ credential: 'other', env: { CREDENTIALS_DIRECTORY: dir } })?.reveal(), KEY);
  t.equal(readApiKey({ credential: 'missing', env: { CREDENTIALS_DIRECTORY: dir } }), undefined);
  t.equal(readApiKey({ env: {} }), undefined, 'no CREDENTIALS_DIRECTORY');
  t.throws(() => readApiKey({ file: join(dir, 'nope') }), { code: 'E_CONFIG', message: /api_key_file .*nope cannot be read \(ENOENT\)/ });
  t.throws(() => readApiKey({ credential: '../etc/passwd', env: { CREDENTIALS_DIRECTORY: dir } }), { code: 'E_CONFIG' });
});

t.test('a Secret prints as [redacted] everywhere; redact() masks secrets in a config tree', async (t) => {
  const s = new Secret(KEY);
  t.equal(String(s), '[redacted]');
  t.equal(`${s}`, '[redacted]');
  t.equal(JSON.stringify({ s }), '{"s":"[redacted]"}');
  t.notMatch(inspect({ s }), KEY);
  const config = {
    upstream: { url: `https://bob:${KEY}@api.example.com/v1?token=${KEY}&x=1`, model: 'm', api_key: KEY, api_key_file: '/etc/edgellm/upstream.key', key: s },
    note: `the key is ${KEY}`,
    list: [{ password: 'hunter2' }],
    empty: { api_key: '' },
  };
  const safe = redact(config, [KEY]);
  const text = JSON.stringify(safe);
  t.notMatch(text, KEY);
  t.notMatch(text, 'hunter2');
  t.equal(safe.upstream.api_key_file, '/etc/edgellm/upstream.key', 'where the key lives is not secret');
  t.equal(safe.upstream.model, 'm');
  t.equal(safe.empty.api_key, '', 'an empty value stays visible as empty');
  t.match(safe.upstream.url, /^https:\/\/redacted@api\.example\.com\/v1\?token=redacted&x=1$/);
  t.equal(config.upstream.api_key, KEY, 'the original is untouched');
  t.equal(redactUrl('http://host/v1'), 'http://host/v1');
  t.equal(redactUrl('not a url'), 'not a url');
});

t.test('every produced error is an EdgeError', async (t) => {
  server.mode = '500';
  const { err } = await failure(client().chat({ prompt: 'Hi' }));
  t.ok(err instanceof EdgeError);
});

t.test('the key appears nowhere: describe(), inspect, JSON, a config-load audit record, redacted config', async (t) => {
  const upstream = client();
  const audit = new MemoryAuditSink();
  const config = { upstream: { url: server.url, model: 'big-model', api_key: KEY, api_key_file: '/etc/edgellm/upstream.key' }, access: { default_role: 'local' } };
  const rec = configLoadRecord(config, '/etc/edgellm/config.yaml', 0, [KEY]);
  audit.write(rec);
  const produced = [JSON.stringify(upstream.describe()), inspect(upstream), JSON.stringify(upstream), JSON.stringify(rec), JSON.stringify(redact(config, [KEY])), JSON.stringify(audit.records)];
  t.equal(rec.digest.length, 64);
  t.equal(configLoadRecord(config, 'x', 0, [KEY]).digest, rec.digest, 'the same config gives the same digest');
  for (const s of produced) t.notOk(s.includes(KEY), `no key in ${s.slice(0, 80)}`);
});
