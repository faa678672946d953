// The OpenAI-compatible API inside the daemon's admission: its requests take the same batch.max slots
// and limits.queue_depth waiting places as MQTT requests, a client that hangs up gives its slot or
// place back at once, and SIGTERM refuses what waits and drains what runs. The daemon is a child
// process (test/helpers/daemon-child.ts) with the deterministic fake engine, slowed down per word.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Broker, findMosquitto, freePort } from '../helpers/broker.js';
import { daemonConfig, DaemonProcess } from '../helpers/daemon.js';
import { Device } from '../helpers/device.js';
import { postJson, postStream, streamedText } from '../helpers/openai-client.js';
import { requires } from '../helpers/serve.js';
import type { TapTest } from '../fixtures/paths.js';

const mosquitto = findMosquitto();
const needs = requires('openai-queue.test', mosquitto !== undefined, 'the daemon needs mosquitto (apt-get install mosquitto)');

/** The fake engine's pace: one word per WORD_MS. */
const WORD_MS = 50;
/** A prompt the fake engine takes 100 words (5 s) to answer. */
const LONG = Array.from({ length: 100 }, (_, i) => `w${i}`).join(' ');

let broker: Broker | undefined;
t.teardown(() => broker?.destroy());
const work = mkdtempSync(join(tmpdir(), 'edgellm-openai-queue-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
let n = 0;

/** A daemon with one slot and one waiting place, its API on a free port, and a device on its broker. */
async function setup(t: TapTest | typeof import('tap').default, over: Record<string, unknown> = {}) {
  broker ??= await Broker.start(mosquitto!);
  n++;
  const port = await freePort();
  const prefix = `q${n}`;
  const config = daemonConfig({
    broker: { url: broker.url },
    prefix,
    node_id: `queue${n}`,
    state_dir: join(work, `state${n}`),
    batch: { max: 1 },
    openai: { port },
    ...over,
    limits: { queue_depth: 1, drain_s: 10, ...((over.limits as object | undefined) ?? {}) },
  });
  const daemon = await DaemonProcess.start(config, WORD_MS);
  t.teardown(() => daemon.kill('SIGKILL'));
  const device = await Device.connect(broker.url, `device-${prefix}`, [`${prefix}/response/#`]);
  t.teardown(() => device.close());
  const url = `http://127.0.0.1:${port}/v1/chat/completions`;
  const chat = (content: string, extra: Record<string, unknown> = {}) => ({ messages: [{ role: 'user', content }], ...extra });
  const mqtt = (id: string, prompt: string, extra: Record<string, unknown> = {}) => device.publish(`${prefix}/request/press`, { id, prompt, ...extra });
  return { daemon, device, url, chat, mqtt };
}

let sharedDaemon: ReturnType<typeof setup> | undefined;
/** The first three tests leave the daemon as they found it (idle), so they share one: starting one takes seconds. */
const shared = () => (sharedDaemon ??= setup(t));

const since = (t0: number) => Date.now() - t0;
const CANCELLED = /the client disconnected; cancelled after (\d+) tokens/g;
/** Waits until the daemon's log holds `count` lines matching `re` (a /g pattern). */
async function logged(daemon: DaemonProcess, re: RegExp, count: number): Promise<void> {
  const until = Date.now() + 10_000;
  while ((daemon.output.match(re) ?? []).length < count) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${count} x ${re} in:\n${daemon.output}`);
    await sleep(20);
  }
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('a client that hangs up mid-stream cancels its generation, and its slot is free at once', needs, async (t) => {
  const { daemon, url, chat } = await shared();
  const before = (daemon.output.match(CANCELLED) ?? []).length;
  const cut = await postStream(url, { ...chat(LONG), stream: true }, { hangUpAfter: 2 });
  t.equal(cut.status, 200);
  t.equal(streamedText(cut.events), 'you said:', 'two words came before the hang-up');
  await logged(daemon, CANCELLED, before + 1);
  const tokens = Number([...daemon.output.matchAll(CANCELLED)].at(-1)![1]);
  t.ok(tokens < 20, `the generation stopped after ${tokens} of 102 words`);

  const t0 = Date.now();
  const next = await postJson(url, chat('hello'));
  t.equal(next.status, 200, JSON.stringify(next.body));
  t.match(next.body, { choices: [{ message: { content: 'you said: hello' } }] });
  t.ok(since(t0) < 3000, `the one slot was free: answered in ${since(t0)} ms, not after the ~5 s the cut request had left`);
});

t.test('a request waiting for a slot leaves the queue when its client hangs up', needs, async (t) => {
  const { daemon, url, chat } = await shared();
  const cancelledBefore = (daemon.output.match(CANCELLED) ?? []).length;
  const runningHangUp = new AbortController();
  const running = fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(chat(LONG)), signal: runningHangUp.signal }).catch((e: unknown) => e);
  await sleep(300);
  const waitingHangUp = new AbortController();
  const waiting = fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(chat('first in line')), signal: waitingHangUp.signal }).catch((e: unknown) => e);
  await sleep(300);
  waitingHangUp.abort();
  await daemon.waitFor(/the client disconnected while it waited for a slot/);
  t.match(await waiting, { name: 'AbortError' });

  // limits.queue_depth is 1: this one is taken only because the one that hung up gave its place back.
  const third = postJson(url, chat('second in line'));
  await sleep(300);
  runningHangUp.abort(); // a non-streaming client's hang-up cancels too, and the slot goes to the third
  const t0 = Date.now();
  const r = await third;
  t.equal(r.status, 200, JSON.stringify(r.body));
  t.match(r.body, { choices: [{ message: { content: 'you said: second in line' }, finish_reason: 'stop' }] });
  t.ok(since(t0) < 3000, `answered ${since(t0)} ms after the running client hung up, not the ~5 s its generation had left`);
  await running;
  await logged(daemon, CANCELLED, cancelledBefore + 1);
});

t.test('API and MQTT requests wait in one line for the same slots', needs, async (t) => {
  const { device, url, chat, mqtt } = await shared();
  await mqtt('m1', 'one two three four five six seven eight nine ten', { stream: true, temperature: 0 });
  // When each answer arrived, noted as it arrives (whatever the test is awaiting meanwhile).
  const m1Done = device.final('m1', 10_000).then((r) => ({ r, at: Date.now() }));
  await device.waitFor((r) => r.body.id === 'm1' && r.body.type === 'chunk', 5000, 'm1 running');
  let apiAt = 0;
  const api = postJson(url, chat('from the API', { temperature: 0 })).then((r) => ((apiAt = Date.now()), r));
  await sleep(300);

  await mqtt('m2', 'no room');
  t.match((await device.final('m2')).body, { type: 'error', error: { code: 'E_QUEUE_FULL' } }, 'the API request holds the one waiting place against MQTT...');
  const refused = await postJson(url, chat('no room either'));
  t.equal(refused.status, 429, '...and against the API');
  t.match(refused.body, { error: { type: 'rate_limit_error', code: 'E_QUEUE_FULL', message: /already waiting \(limits\.queue_depth\)/ } });
  t.equal(refused.headers.get('retry-after'), '1');

  const { r: m1, at: m1At } = await m1Done;
  t.match(m1.body, { type: 'done', text: 'you said: one two three four five six seven eight nine ten' });
  const r = await api;
  t.equal(r.status, 200);
  t.match(r.body, { choices: [{ message: { content: 'you said: from the API' } }] });
  t.ok(apiAt >= m1At + 100, `the API request ran once the MQTT request gave the slot back (answered ${apiAt - m1At} ms after it)`);

  // And the other way round: an API request in the slot makes an MQTT request wait.
  const words = Array.from({ length: 30 }, (_, i) => `x${i}`).join(' ');
  const long = postJson(url, chat(words, { temperature: 0 }));
  await sleep(200);
  await mqtt('m3', 'after the API', { temperature: 0 });
  const [apiReply, m3] = await Promise.all([long, device.final('m3')]);
  t.match(apiReply.body, { choices: [{ message: { content: `you said: ${words}` } }] });
  t.match(m3.body, { type: 'done', text: 'you said: after the API' });
  t.ok((m3.body.timings as { queue_ms: number }).queue_ms >= 200, `m3 waited ${(m3.body.timings as { queue_ms: number }).queue_ms} ms for the API request's slot`);
});

t.test('SIGTERM refuses waiting API requests with 503 and lets a running one finish', needs, async (t) => {
  const { daemon, url, chat } = await setup(t);
  const running = postStream(url, { ...chat('one two three four five six seven eight nine ten eleven twelve', { temperature: 0 }), stream: true });
  await sleep(200);
  const waiting = postJson(url, chat('never started'));
  await sleep(200);
  const stopped = daemon.kill('SIGTERM');
  const refused = await waiting;
  t.equal(refused.status, 503);
  t.match(refused.body, { error: { type: 'server_error', code: 'E_UNAVAILABLE', message: /stopping/ } });
  const r = await running;
  t.equal(r.events.at(-1), '[DONE]', 'the running stream finished');
  t.equal(streamedText(r.events), 'you said: one two three four five six seven eight nine ten eleven twelve');
  await stopped;
  t.equal(daemon.proc.exitCode, 0, daemon.output);
});

t.test('a generation still running after limits.drain_s ends with an error, not a cut answer passed off as whole', needs, async (t) => {
  const { daemon, url, chat } = await setup(t, { limits: { drain_s: 1 } });
  const streamed = postStream(url, { ...chat(LONG), stream: true });
  await sleep(300);
  const stopped = daemon.kill('SIGTERM');
  const r = await streamed;
  t.notOk(r.events.includes('[DONE]'), 'no [DONE]: the answer is incomplete');
  t.match(r.events.at(-1), { error: { code: 'E_UNAVAILABLE', type: 'server_error', message: /stopped after \d+ tokens, before the answer was complete/ } });
  await stopped;
  t.equal(daemon.proc.exitCode, 0, daemon.output);
});
