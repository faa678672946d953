// `edgellm serve` as systemd runs it: the built CLI in its own process, the real engine on
// stories260K.gguf, a real mosquitto, and (for the notify test) python3 as the service manager.
import t from 'tap';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Broker, findMosquitto, freePort } from '../helpers/broker.js';
import { Device } from '../helpers/device.js';
import { hasPython3, listenNotify } from '../helpers/notify-listener.js';
import { parsePrometheus, valueOf } from '../helpers/prometheus.js';
import { hasStories, repoRoot, requires, ServeProcess, stories, STORIES_CONTINUATION } from '../helpers/serve.js';

const cli = resolve(repoRoot, 'dist', 'cli', 'main.js');
const mosquitto = findMosquitto();
const who = 'serve-real.test';
const needs = {
  real: requires(who, mosquitto !== undefined && hasStories(), `the real daemon needs mosquitto (apt-get install mosquitto) and ${stories}`),
  notify: requires(
    who,
    mosquitto !== undefined && hasStories() && hasPython3(),
    `systemd notify needs mosquitto, ${stories} and python3 (the notify socket's listener)`,
  ),
};

const work = mkdtempSync(join(tmpdir(), 'edgellm-serve-real-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A config file as an admin writes one: the real model, a small context, one engine thread. */
function writeConfig(name: string, brokerUrl: string): string {
  const file = join(work, `${name}.yaml`);
  writeFileSync(
    file,
    [
      `node_id: ${name}`,
      `prefix: ${name}`,
      `state_dir: ${join(work, name, 'state')}`,
      `model: ${stories}`,
      'broker:',
      `  url: ${brokerUrl}`,
      'engine:',
      '  threads: 1',
      '  context_size: 256',
      'limits:',
      '  drain_s: 5',
      'log:',
      '  level: debug',
      '',
    ].join('\n'),
  );
  return file;
}

function serve(config: string, env: NodeJS.ProcessEnv = {}, args: string[] = []): ServeProcess {
  const clean = { ...process.env };
  for (const k of Object.keys(clean)) if (k.startsWith('EDGELLM_') || k === 'NOTIFY_SOCKET' || k.startsWith('WATCHDOG_')) delete clean[k];
  return new ServeProcess(process.execPath, [cli, 'serve', '--config', config, ...args], { ...clean, ...env });
}

t.test('edgellm serve answers over MQTT 5 with stories260K: streamed, then from the cache', needs.real, async (t) => {
  const broker = await Broker.start(mosquitto!);
  t.teardown(() => broker.destroy());
  // systemd's credential: the daemon says it has a key, never what it is.
  const creds = join(work, 'credentials');
  mkdirSync(creds);
  writeFileSync(join(creds, 'upstream-key'), 'sk-never-logged-42\n');
  const httpPort = await freePort();
  const daemon = serve(writeConfig('real', broker.url), { CREDENTIALS_DIRECTORY: creds, EDGELLM_UPSTREAM_URL: 'https://llm.example/v1', EDGELLM_UPSTREAM_MODEL: 'big' }, ['--http-port', String(httpPort)]);
  t.teardown(() => daemon.kill());
  await daemon.waitForLog(/node real ready/, 60_000);
  const health = await fetch(`http://127.0.0.1:${httpPort}/healthz`);
  t.equal(health.status, 200, '--http-port: /healthz is 200 once ready');
  t.match(await health.json(), { status: 'ok', node: 'real', models: 'loaded', broker: 'connected' });
  t.match(daemon.log, /upstream https:\/\/llm\.example\/v1 \(model big\): API key present/, 'the upstream key is read from $CREDENTIALS_DIRECTORY');
  t.match(daemon.log, /model stories260K: .*stories260K\.gguf \(context 256\)/, 'engine.context_size reached the engine');

  const device = await Device.connect(broker.url, 'serve-real-device', ['real/reply/#']);
  t.teardown(() => device.close());
  const ask = (id: string) =>
    device.publish(
      'real/request/press-1',
      { id, prompt: 'Once upon a time', max_tokens: 24, temperature: 0, stream: true },
      { responseTopic: 'real/reply/press-1', correlation: `corr-${id}` },
    );

  await ask('a1');
  const done = await device.final('a1', 60_000);
  t.equal(done.topic, 'real/reply/press-1', 'on the Response Topic');
  t.equal(done.correlation?.toString(), 'corr-a1', 'with the Correlation Data');
  const body = done.body as Record<string, unknown> & { text: string; usage: Record<string, number>; timings: Record<string, number> };
  t.equal(body.type, 'done', JSON.stringify(body));
  t.ok(body.text.startsWith(STORIES_CONTINUATION), `the model's continuation: ${JSON.stringify(body.text)}`);
  t.match(body, { finish_reason: 'length', route: 'local', cached: false, model: 'stories260K', node: 'real' });
  t.equal(body.usage.completion_tokens, 24, 'max_tokens tokens');
  t.same(Object.keys(body).sort(), ['cached', 'finish_reason', 'id', 'model', 'node', 'route', 'route_reason', 'text', 'timings', 'trace_id', 'type', 'usage'],
    "the protocol's fields, nothing of the engine's own (sampling, stop)");
  t.ok((body.usage.prompt_tokens ?? 0) > 0, 'prompt tokens counted');
  for (const k of ['queue_ms', 'ttft_ms', 'total_ms', 'tokens_per_s']) t.type(body.timings[k], 'number', `timings.${k}`);
  const chunks = device.for('a1').filter((r) => r.body.type === 'chunk');
  t.ok(chunks.length > 1, `streamed in ${chunks.length} chunks`);
  t.same(chunks.map((c) => c.body.seq), chunks.map((_, i) => i), 'seq counts from 0');
  t.equal(chunks.map((c) => c.body.text).join(''), body.text, 'the chunks are the final text');

  await ask('a2');
  const again = await device.final('a2', 30_000);
  t.match(again.body, { type: 'done', text: body.text, cached: true, finish_reason: 'length' }, 'the same request again comes from the cache');

  const m = parsePrometheus(await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text());
  t.equal(valueOf(m, 'edgellm_requests_total', { outcome: 'done', route: 'local' }), 1, '/metrics: one generated');
  t.equal(valueOf(m, 'edgellm_requests_total', { outcome: 'cached', route: 'local' }), 1, 'one from the cache');
  t.equal(valueOf(m, 'edgellm_generated_tokens_total', { route: 'local' }), 24, 'its 24 tokens');
  t.equal(valueOf(m, 'edgellm_model_info', { model: 'stories260K', context_size: '256' }), 1);
  t.ok(valueOf(m, 'edgellm_decode_tokens_per_second') > 0, `decode speed ${valueOf(m, 'edgellm_decode_tokens_per_second')} tokens/s`);

  // trace: true on the real engine: the decode loop's own figures.
  await device.publish('real/request/press-1', { id: 'a3', prompt: 'Once upon a time', max_tokens: 16, temperature: 0, trace: true }, { responseTopic: 'real/reply/press-1' });
  const traced = (await device.final('a3', 60_000)).body as { finish_reason: string; usage: { completion_tokens: number }; trace: Record<string, any> };
  t.equal(traced.finish_reason, 'length', 'all 16 tokens (no end-of-generation token, which is not a step of the answer)');
  t.match(traced.trace, { route: 'local', cache: 'miss', queue_wait_ms: Number, prefill_ms: Number, token_ms: { p50: Number, p95: Number, tokens: traced.usage.completion_tokens } }, JSON.stringify(traced.trace));
  t.ok(traced.trace.prefill_ms >= 0 && traced.trace.token_ms.p50 >= 0 && traced.trace.token_ms.p50 <= traced.trace.token_ms.p95, 'measured times, p50 <= p95');
  t.same(traced.trace.batch_sizes, [{ size: 1, steps: traced.usage.completion_tokens }], 'alone: every step advanced one sequence');

  const exit = await daemon.stop();
  t.same(exit, { code: 0, signal: null }, 'SIGTERM: drains and exits 0');
  t.notMatch(daemon.log, /sk-never-logged/, 'the key is never logged');
  const records = daemon.records(); // throws on a line that is not a JSON log record
  t.ok(records.length > 5 && records.every((r) => r.node === 'real'), `stdout is ${records.length} JSON log lines of node real`);
  t.ok(records.some((r) => r.level === 'info' && r.msg.startsWith(`http endpoint on http://127.0.0.1:${httpPort}`)), 'the endpoint is logged');
});

t.test('under systemd: READY=1 only once the broker is connected, watchdog pings, STOPPING=1 on SIGTERM', needs.notify, async (t) => {
  const socket = join(work, 'notify.sock');
  const listener = await listenNotify(socket, 60);
  t.teardown(() => listener.child.kill());
  const broker = await Broker.create(mosquitto!); // not started yet: the daemon comes up first
  t.teardown(() => broker.destroy());
  const msgs = () => listener.received.map((d) => d.msg);
  const ready = () => listener.received.findIndex((d) => d.msg.split('\n').includes('READY=1'));

  const daemon = serve(writeConfig('notify', broker.url), { NOTIFY_SOCKET: socket, WATCHDOG_USEC: '400000' });
  t.teardown(() => daemon.kill());
  await daemon.waitForLog(/model stories260K: /, 60_000);
  const until = Date.now() + 20_000;
  while (!msgs().some((m) => m.startsWith('STATUS=connecting to')) && Date.now() < until) await sleep(25);
  t.ok(msgs().some((m) => /^STATUS=loading model stories260K/.test(m)), 'STATUS while loading the model');
  t.ok(msgs().some((m) => m === `STATUS=connecting to ${broker.url}`), 'STATUS while waiting for the broker');
  await sleep(1500);
  t.equal(ready(), -1, 'no READY=1 while the broker is down, though the model is loaded');
  t.ok(msgs().filter((m) => m === 'WATCHDOG=1').length >= 3, 'the watchdog is fed while it waits (the event loop is alive)');

  await broker.start();
  while (ready() === -1 && Date.now() < until + 30_000) await sleep(25);
  const at = ready();
  t.not(at, -1, `READY=1 once the broker is up; got ${JSON.stringify(msgs())}`);
  t.match(listener.received[at]?.msg, /^READY=1\nSTATUS=serving stories260K on mqtt:\/\/127\.0\.0\.1:\d+ as notify$/);
  t.ok(daemon.log.indexOf('connected to') !== -1 && daemon.log.indexOf('connected to') < daemon.log.indexOf('node notify ready'), "the log says 'connected' before 'ready'");

  await sleep(1000);
  const pings = listener.received.slice(at + 1).filter((d) => d.msg === 'WATCHDOG=1');
  t.ok(pings.length >= 3, `WATCHDOG=1 every WATCHDOG_USEC/2 = 200 ms: ${pings.length} in 1 s`);
  const gaps = pings.slice(1).map((p, i) => p.ms - pings[i]!.ms);
  t.ok(gaps.every((g) => g > 100 && g < 600), `ping gaps ${gaps.map(Math.round).join(', ')} ms`);

  const exit = await daemon.stop();
  t.same(exit, { code: 0, signal: null }, 'exits 0 after SIGTERM');
  const stopping = listener.received.findIndex((d) => d.msg.startsWith('STOPPING=1'));
  t.ok(stopping > at, 'STOPPING=1 after SIGTERM');
  t.match(listener.received[stopping]?.msg, /^STOPPING=1\nSTATUS=stopping: finishing running requests/);
});

t.test('in process: the engine adapter counts tokens, and a prompt the context cannot hold is an E_PROMPT_TOO_LONG reply', needs.real, async (t) => {
  const { configSchema } = await import('../../src/config.js');
  const { createLogger } = await import('../../src/log.js');
  const { localModelOpener, openLocalModel } = await import('../../src/daemon/local-model.js');
  const { Service } = await import('../../src/daemon/service.js');

  const model = await openLocalModel(stories, { threads: 1, contextSize: 64, maxSequences: 1 });
  t.equal(model.name, 'stories260K');
  t.equal(model.contextSize, 64);
  t.equal(model.countTokens('Once upon a time'), 5, 'BOS + 4 tokens');
  const gen = model.generate({ prompt: 'Once upon a time', max_tokens: 4, temperature: 0 });
  let streamed = '';
  for await (const piece of gen) streamed += piece;
  const result = await gen.result;
  t.equal(result.text, streamed);
  t.match(result, { finish_reason: 'length', usage: { prompt_tokens: 5, completion_tokens: 4 } });
  await model.close();

  const broker = await Broker.start(mosquitto!);
  t.teardown(() => broker.destroy());
  const config = configSchema.parse({
    model: stories, node_id: 'inproc', prefix: 'inproc', state_dir: join(work, 'inproc'),
    broker: { url: broker.url }, engine: { threads: 1, context_size: 64 }, log: { level: 'error' },
  });
  const service = new Service(config, localModelOpener(config), createLogger('error'));
  t.teardown(() => service.stop());
  await service.start();
  const device = await Device.connect(broker.url, 'inproc-device', ['inproc/response/#']);
  t.teardown(() => device.close());
  await device.publish('inproc/request/d1', { id: 'long', prompt: 'Once upon a time', max_tokens: 60 });
  t.match((await device.final('long', 30_000)).body, {
    type: 'error',
    error: { code: 'E_PROMPT_TOO_LONG', message: /the prompt is 5 tokens and max_tokens is 60 .*context holds 64; .*engine\.context_size/ },
  });
  // No max_tokens: limits.max_tokens (1024) is only a default, so it gives way to the 59 positions left.
  await device.publish('inproc/request/d1', { id: 'default', prompt: 'Once upon a time', temperature: 0 });
  const dflt = (await device.final('default', 30_000)).body as { type: string; usage: { prompt_tokens: number; completion_tokens: number } };
  t.equal(dflt.type, 'done', JSON.stringify(dflt));
  t.ok(dflt.usage.prompt_tokens + dflt.usage.completion_tokens <= 64, `fits the context: ${JSON.stringify(dflt.usage)}`);
  await device.publish('inproc/request/d1', { id: 'fits', prompt: 'Once upon a time', max_tokens: 8, temperature: 0 });
  const fits = await device.final('fits', 30_000);
  t.match(fits.body, { type: 'done', finish_reason: 'length', usage: { completion_tokens: 8 } });
  t.ok(String(fits.body.text).startsWith(', there was'), JSON.stringify(fits.body.text));
});

// A unit whose model is missing must fail once, say why, and not be restarted every RestartSec:
// exit 2 is in the unit's RestartPreventExitStatus=, and the reason reaches `systemctl status`.
t.test('under systemd, a missing model fails the start once: STATUS= says why, exit 2 (not restarted)', needs.notify, async (t) => {
  const socket = join(work, 'notify-missing.sock');
  const listener = await listenNotify(socket, 60);
  t.teardown(() => listener.child.kill());
  const config = join(work, 'missing-model.yaml');
  writeFileSync(config, readFileSync(writeConfig('missing', 'mqtt://127.0.0.1:9'), 'utf8').replace(`model: ${stories}`, `model: ${join(work, 'gone.gguf')}`));
  const daemon = serve(config, { NOTIFY_SOCKET: socket });
  t.teardown(() => daemon.kill());
  const exited = await daemon.exited;
  t.same(exited, { code: 2, signal: null }, 'exit status 2, which RestartPreventExitStatus=2 keeps systemd from restarting');
  t.match(daemon.log, /E_MODEL_NOT_FOUND/, 'the error is on stderr');
  const until = Date.now() + 5_000;
  const statuses = () => listener.received.flatMap((d) => d.msg.split('\n')).filter((l) => l.startsWith('STATUS='));
  while (!statuses().some((m) => m.startsWith('STATUS=failed to start')) && Date.now() < until) await sleep(25);
  t.match(statuses().at(-1), /^STATUS=failed to start: E_MODEL_NOT_FOUND: .*gone\.gguf/, `the last STATUS names the reason: ${JSON.stringify(statuses())}`);
  t.notOk(listener.received.some((d) => d.msg.split('\n').includes('READY=1')), 'never READY');
});
