// One edgellm node as another's "cloud": a bigger box runs `edgellm serve --openai-port`, a Pi runs
// `edgellm serve` with upstream.url pointing at it. Both are the built CLI in their own processes with
// the real engine on small random GGUFs and a real mosquitto. Requests the Pi's policy sends to the
// cloud are answered by the big box's model and relayed chunk by chunk; when the big box goes away
// the Pi falls back to its own model and says so.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { assertCliBuilt, cli } from '../fixtures/paths.js';
import { writeModel, type Spec } from '../fixtures/random-model.js';
import { Broker, findMosquitto, freePort } from '../helpers/broker.js';
import { Device } from '../helpers/device.js';
import { postJson } from '../helpers/openai-client.js';
import { requires, ServeProcess } from '../helpers/serve.js';

const mosquitto = findMosquitto();
const needs = requires('edgellm-upstream.test', mosquitto !== undefined, 'the daemons need mosquitto (apt-get install mosquitto)');
t.before(assertCliBuilt);

const work = mkdtempSync(join(tmpdir(), 'edgellm-upstream-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

const BIG: Spec = { name: 'big box', arch: 'llama', nVocab: 320, nEmbd: 64, nLayer: 2, nHead: 4, nHeadKv: 2, headDim: 16, nFf: 96, contextLength: 512 };
const PI: Spec = { ...BIG, name: 'pi model', nLayer: 1 };
const KEY = 'sk-box-upstream-5c1e0d';
/** Prompts of more tokens than this go to the cloud (policy.max_local_prompt_tokens). */
const MAX_LOCAL = 12;
const LONG = Array.from({ length: 40 }, (_, i) => `w${i}`).join(' ');

function serve(args: string[]): ServeProcess {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('EDGELLM_') || k === 'NOTIFY_SOCKET' || k.startsWith('WATCHDOG_')) delete env[k];
  return new ServeProcess(process.execPath, [cli, 'serve', ...args], env);
}

t.test('a second edgellm serve is the upstream: cloud routes are answered by it, and its loss falls back to local', needs, async (t) => {
  const broker = await Broker.start(mosquitto!);
  t.teardown(() => broker.destroy());
  const bigModel = writeModel(BIG, work, { vocab: true, seed: 11 }).path;
  const piModel = writeModel(PI, work, { vocab: true, seed: 12 }).path;
  const bigName = basename(bigModel).replace(/\.gguf$/, '');
  const keyFile = join(work, 'box.key');
  writeFileSync(keyFile, `${KEY}\n`, { mode: 0o600 });

  const port = await freePort();
  const bigConfig = join(work, 'big.yaml');
  writeFileSync(
    bigConfig,
    ['node_id: box', 'prefix: box', `state_dir: ${join(work, 'box-state')}`, `model: ${bigModel}`, 'broker:', `  url: ${broker.url}`,
      'engine:', '  threads: 1', '  context_size: 512', 'openai:', `  api_key_file: ${keyFile}`, ''].join('\n'),
  );
  const big = serve(['--config', bigConfig, '--openai-port', String(port)]);
  t.teardown(() => big.kill());
  await big.waitForLog(/node box ready/, 60_000);

  const piConfig = join(work, 'pi.yaml');
  writeFileSync(
    piConfig,
    [
      'node_id: pi',
      'prefix: plant',
      `state_dir: ${join(work, 'pi-state')}`,
      `model: ${piModel}`,
      'broker:',
      `  url: ${broker.url}`,
      'engine:',
      '  threads: 1',
      '  context_size: 512',
      'upstream:',
      `  url: http://127.0.0.1:${port}/v1`,
      `  model: ${bigName}`,
      `  api_key_file: ${keyFile}`,
      'policy:',
      `  max_local_prompt_tokens: ${MAX_LOCAL}`,
      'access:',
      '  roles:',
      '    line: {models: ["*"], routes: [local, cloud]}',
      '  default_role: line',
      '',
    ].join('\n'),
  );
  const pi = serve(['--config', piConfig]);
  t.teardown(() => pi.kill());
  await pi.waitForLog(/node pi ready/, 60_000);

  const device = await Device.connect(broker.url, 'upstream-test-device', ['plant/response/#']);
  t.teardown(() => device.close());
  const ask = async (body: Record<string, unknown>) => {
    await device.publish('plant/request/press-1', { max_tokens: 8, temperature: 0, ...body });
    return (await device.final(body.id as string, 60_000)).body as Record<string, any>;
  };

  // Forced to the cloud, streamed: the big box's model answers, chunk by chunk, as the big box's API would.
  const cloud = await ask({ id: 'c1', prompt: 'hello there', route: 'cloud', stream: true });
  t.match(cloud, { type: 'done', route: 'cloud', route_reason: /cloud/, cached: false, node: 'pi' });
  t.ok(cloud.usage.completion_tokens > 0, 'the upstream generated tokens');
  const chunks = device.for('c1').filter((r) => r.body.type === 'chunk').map((r) => r.body.text as string);
  t.ok(chunks.length > 0, 'the upstream stream was relayed in chunks');
  t.equal(chunks.join(''), cloud.text, 'the chunks add up to the final text');
  const direct = await postJson(`http://127.0.0.1:${port}/v1/chat/completions`, { model: bigName, messages: [{ role: 'user', content: 'hello there' }], max_tokens: 8, temperature: 0 }, { key: KEY });
  t.equal(direct.status, 200);
  t.equal(cloud.text, (direct.body as any).choices[0].message.content, "the text is the big box's greedy answer to the same messages");

  // Auto: a short prompt stays on the Pi, a long one goes to the box with the policy's reason.
  const short = await ask({ id: 's1', prompt: 'hi' });
  t.match(short, { type: 'done', route: 'local' });
  const long = await ask({ id: 'l1', prompt: LONG });
  t.match(long, { type: 'done', route: 'cloud', route_reason: /max_local_prompt_tokens/ });

  // The box goes away: the next long prompt falls back to the Pi's model, and the reply says so.
  big.kill();
  await big.exited;
  const fallback = await ask({ id: 'l2', prompt: LONG, max_tokens: 4 });
  t.match(fallback, { type: 'done', route: 'local', fallback: true, fallback_reason: String });
  t.notOk(pi.log.includes(KEY), 'the key is not in the Pi\'s log');
});
