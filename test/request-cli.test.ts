// `npm start` and `edgellm request` as a user runs them: the built CLI in real processes, the daemon
// with its embedded broker and the demo model on free ports, and (when installed) against mosquitto.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Broker, findMosquitto, freePort } from './helpers/broker.js';
import { Device } from './helpers/device.js';
import { cleanEnv, requires, runCli, ServeProcess } from './helpers/serve.js';
import { assertCliBuilt, cli, root } from './fixtures/paths.js';

t.before(assertCliBuilt);
const work = mkdtempSync(join(tmpdir(), 'edgellm-request-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

/** `edgellm request ARGS` to completion: exit status, output and how long it took. */
const request = (args: string[], timeoutMs = 60_000) => runCli(cli, ['request', ...args], { timeoutMs });

function serveDemo(stateDir: string, port: number, extra: string[] = []): ServeProcess {
  return new ServeProcess(process.execPath, [cli, 'serve', '--demo', '--state-dir', stateDir, ...extra], cleanEnv({ EDGELLM_BROKER_EMBEDDED_PORT: String(port) }));
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

t.test('serve --demo with no broker configured: edgellm request round trips, plain and streamed', async (t) => {
  const port = await freePort();
  const state = join(work, 'demo');
  const daemon = serveDemo(state, port);
  t.teardown(() => daemon.kill());
  await daemon.waitForLog(/try it: [^\n]*\n/, 60_000);
  const broker = `mqtt://127.0.0.1:${port}`;
  t.ok(existsSync(join(state, 'models', 'edgellm-demo.gguf')), 'the demo model was written into the state directory');
  t.match(daemon.log, /serving the demo model .*edgellm-demo\.gguf \(written just now\)\. Its weights are random, so its answers are nonsense/, 'the log says the text will be nonsense');
  t.match(daemon.log, new RegExp(`running the embedded MQTT broker \\(MQTT 3\\.1\\.1\\) on ${broker}`));
  t.match(daemon.log, new RegExp(`try it: npx edgellm request -p Hello --broker ${broker}"`), 'the log says how to try it');

  const streamed = await request(['-p', 'Is the spindle hot?', '--broker', broker, '--max-tokens', '12', '--temperature', '0', '--stream']);
  t.equal(streamed.status, 0, streamed.stderr);
  t.equal(streamed.stderr, '', 'nothing on stderr');
  t.match(streamed.stdout, /^[^\n]*\S[^\n]*\n$/, 'words, then a newline');

  // The same greedy request again: the cache answers, with the same text, as JSON.
  const json = await request(['-p', 'Is the spindle hot?', '--broker', broker, '--max-tokens', '12', '--temperature', '0', '--json', '--id', 'same-1', '--device', 'press-7']);
  t.equal(json.status, 0, json.stderr);
  const reply = JSON.parse(json.stdout) as Record<string, unknown>;
  t.match(reply, { id: 'same-1', type: 'done', model: 'edgellm-demo', cached: true, finish_reason: /^(length|stop)$/ });
  t.equal(`${reply.text as string}\n`, streamed.stdout, 'what --stream printed is the whole answer');

  const plain = await request(['-p', 'Hello', '--broker', broker, '--max-tokens', '8', '--seed', '3']);
  t.equal(plain.status, 0, plain.stderr);
  t.match(plain.stdout, /^[^\n]*\S[^\n]*\n$/);

  const chat = await request(['--system', 'Answer briefly.', '-p', 'Hello', '--broker', broker, '--max-tokens', '4', '--json']);
  t.equal(chat.status, 0, chat.stderr);
  t.match(JSON.parse(chat.stdout), { type: 'done', usage: { completion_tokens: /\d/ } }, '--system sends a chat');

  const stopped = await daemon.stop();
  t.equal(stopped.code, 0, 'SIGTERM: exit 0');
  t.ok(await canListen(port), 'the embedded broker stopped with the daemon');

  // The next start reuses the model file.
  const again = serveDemo(state, port);
  t.teardown(() => again.kill());
  await again.waitForLog(/try it: [^\n]*\n/, 60_000);
  t.notMatch(again.log, /written just now/);
  t.equal((await again.stop()).code, 0);
});

t.test('an error reply is printed with its code and exits non-zero; so are a dead broker and a timeout', async (t) => {
  const port = await freePort();
  const daemon = serveDemo(join(work, 'errors'), port);
  t.teardown(() => daemon.kill());
  await daemon.waitForLog(/try it: [^\n]*\n/, 60_000);
  const broker = `mqtt://127.0.0.1:${port}`;

  const bad = await request(['-p', 'Hello', '--broker', broker, '--max-tokens', '-1']);
  t.equal(bad.status, 2);
  t.equal(bad.stdout, '');
  t.match(bad.stderr, /^edgellm: E_BAD_REQUEST: field "max_tokens" must be a whole number >= 1, got number -1\n$/, 'one line with the node\'s code');

  const unknown = await request(['-p', 'Hello', '--broker', broker, '--model', 'gpt-9', '--json']);
  t.equal(unknown.status, 2);
  t.match(JSON.parse(unknown.stdout), { type: 'error', error: { code: 'E_UNKNOWN_MODEL' } }, '--json prints the error reply');
  t.match(unknown.stderr, /^edgellm: E_UNKNOWN_MODEL: /);

  const nobody = await request(['-p', 'Hello', '--broker', broker, '--prefix', 'nobody-here', '--timeout', '1']);
  t.equal(nobody.status, 2);
  t.match(nobody.stderr, /^edgellm: E_TIMEOUT: no answer to request \S+ within 1 s \(--timeout\); the request was cancelled\. Is a node serving nobody-here\/request\/\+ on this broker\?/);
  t.ok(nobody.ms < 15_000, `gave up after its timeout (${nobody.ms} ms)`);

  // Ctrl-C while waiting: the request is cancelled at the node and the command exits 130.
  const waiting = spawn(process.execPath, [cli, 'request', '-p', 'Hello', '--broker', broker, '--prefix', 'nobody-here', '--timeout', '120'], { env: cleanEnv() });
  let waitingErr = '';
  waiting.stderr.on('data', (d: Buffer) => (waitingErr += d.toString()));
  await new Promise((r) => setTimeout(r, 5000));
  waiting.kill('SIGINT');
  const interrupted = await new Promise<number | null>((r) => waiting.on('close', r));
  t.equal(interrupted, 130, `Ctrl-C: exit 130 (stderr: ${waitingErr})`);
  t.match(waitingErr, /^\nedgellm: cancelled request cli-\S+\n$/);

  t.equal((await daemon.stop()).code, 0);
  const dead = await request(['-p', 'Hello', '--broker', broker]);
  t.equal(dead.status, 2);
  t.match(dead.stderr, new RegExp(`^edgellm: E_BROKER: cannot reach the MQTT broker at ${broker}: connection refused\\. Is \`edgellm serve\` running`));
  t.notMatch(dead.stderr, /\n\s+at /, 'no stack trace');
  t.equal(dead.stderr.trim().split('\n').length, 1, 'one line');
  t.ok(dead.ms < 15_000, `failed fast (${dead.ms} ms)`);

  const usage = await request(['--broker', broker]);
  t.equal(usage.status, 2);
  t.match(usage.stderr, /^edgellm: E_BAD_ARGUMENT: say what to ask: -p TEXT/);

  const passwordOnly = await request(['-p', 'Hello', '--broker', broker, '--password-file', join(work, 'no-such-file')]);
  t.equal(passwordOnly.status, 2);
  t.match(passwordOnly.stderr, /^edgellm: E_BAD_ARGUMENT: --password-file needs --username/);
});

t.test('serve --demo whose embedded broker port is taken says which port and what to do', async (t) => {
  const port = await freePort();
  const holder = createServer();
  await new Promise<void>((resolve) => holder.listen(port, '127.0.0.1', resolve));
  t.teardown(() => holder.close());
  const daemon = serveDemo(join(work, 'taken'), port);
  t.teardown(() => daemon.kill());
  const exit = await daemon.exited;
  t.equal(exit.code, 2);
  t.match(daemon.log, new RegExp(`edgellm: E_PORT_IN_USE: cannot start the embedded MQTT broker: port ${port} on 127\\.0\\.0\\.1 is already in use .*set broker\\.url to the broker already there \\(--broker mqtt://127\\.0\\.0\\.1:${port}\\), or broker\\.embedded\\.port`));
});

t.test('without a model and without --demo, serve refuses and offers --demo', async (t) => {
  const daemon = new ServeProcess(process.execPath, [cli, 'serve', '--state-dir', join(work, 'none')], cleanEnv({ EDGELLM_BROKER_EMBEDDED_PORT: String(await freePort()) }));
  t.equal((await daemon.exited).code, 2);
  t.match(daemon.log, /^edgellm: E_CONFIG: no model to serve: .*\(or --demo for a small demo model/);
});

t.test("`npm start`'s command brings the daemon up on a fresh checkout and answers edgellm request", async (t) => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const start = pkg.scripts.start ?? '';
  t.match(start, /^node dist\/cli\/main\.js serve .*--demo/, 'npm start runs the daemon with the demo model');
  t.notMatch(start, /["'$]/, 'a plain command line (no quoting for the shell)');
  // A fresh checkout: no .edgellm yet. The script's relative paths resolve in a copy of the root
  // whose dist is the built one; the port is a free one instead of 1883.
  const checkout = join(work, 'checkout');
  rmSync(checkout, { recursive: true, force: true });
  mkdirSync(checkout);
  symlinkSync(join(root, 'dist'), join(checkout, 'dist'));
  const port = await freePort();
  const [cmd, ...args] = start.split(/\s+/);
  t.equal(cmd, 'node');
  const daemon = new ServeProcess(process.execPath, args, cleanEnv({ EDGELLM_BROKER_EMBEDDED_PORT: String(port) }), checkout);
  t.teardown(() => daemon.kill());
  await daemon.waitForLog(/try it: [^\n]*\n/, 60_000);
  t.ok(existsSync(join(checkout, '.edgellm', 'models', 'edgellm-demo.gguf')), 'the state (and the demo model) went to ./.edgellm');
  t.match(daemon.log, new RegExp(`try it: npx edgellm request -p Hello --broker mqtt://127\\.0\\.0\\.1:${port}"`), 'the log says how to try it');
  const answer = await request(['-p', 'Hello', '--broker', `mqtt://127.0.0.1:${port}`, '--max-tokens', '6']);
  t.equal(answer.status, 0, answer.stderr);
  t.match(answer.stdout, /\S/, 'an answer');
  t.equal((await daemon.stop()).code, 0);
});

const mosquitto = findMosquitto();
t.test(
  'against mosquitto: serve --broker and edgellm request speak MQTT 5 (Response Topic and Correlation Data, no reply_to)',
  requires('request-cli.test', mosquitto !== undefined, 'the MQTT 5 round trip needs mosquitto (apt-get install mosquitto)'),
  async (t) => {
    const broker = await Broker.start(mosquitto!);
    t.teardown(() => broker.destroy());
    const daemon = new ServeProcess(process.execPath, [cli, 'serve', '--demo', '--state-dir', join(work, 'mosq'), '--broker', broker.url, '--node-id', 'mosq'], cleanEnv());
    t.teardown(() => daemon.kill());
    await daemon.waitForLog(/try it: [^\n]*\n/, 60_000);
    t.notMatch(daemon.log, /embedded/, 'no embedded broker when broker.url is set');
    t.match(daemon.log, new RegExp(`try it: npx edgellm request -p Hello --broker ${broker.url.replace(/\./g, '\\.')}`));
    const spy = await Device.connect(broker.url, 'request-spy', ['edgellm/request/+']);
    t.teardown(() => spy.close());
    const r = await request(['-p', 'Hello', '--broker', broker.url, '--max-tokens', '6', '--stream', '--device', 'press-9', '--id', 'v5-1']);
    t.equal(r.status, 0, r.stderr);
    t.match(r.stdout, /\S+\n$/);
    const seen = await spy.waitFor((m) => m.topic === 'edgellm/request/press-9');
    t.equal(seen.body.id, 'v5-1');
    t.notOk('reply_to' in seen.body, 'MQTT 5: the reply topic travels as the Response Topic');
    t.ok(seen.correlation && seen.correlation.length > 0, 'with Correlation Data');
    t.equal((await daemon.stop()).code, 0);
  },
);
