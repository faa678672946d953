// `edgellm serve --openai-port N` as a user runs it: the built CLI in its own process, the real engine on
// a small random GGUF, a real mosquitto. The OpenAI-compatible API answers in OpenAI's shapes, the
// project's own UpstreamClient and another daemon's cloud route use it (so one edgellm node can be
// another's upstream), and bad
// requests get OpenAI-style errors.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UpstreamClient, type UpstreamError } from '../../src/policy/upstream.js';
import { Secret } from '../../src/secret.js';
import { assertCliBuilt, cli, run } from '../fixtures/paths.js';
import { writeModel, type Spec } from '../fixtures/random-model.js';
import { Broker, findMosquitto, freePort } from '../helpers/broker.js';
import { daemonConfig, startDaemon } from '../helpers/daemon.js';
import { Device } from '../helpers/device.js';
import { deltaOf, getJson, postJson, postStream, streamedText, type SseEvent } from '../helpers/openai-client.js';
import { requires, ServeProcess } from '../helpers/serve.js';

const mosquitto = findMosquitto();
const needs = requires('openai-serve.test', mosquitto !== undefined, 'the daemon needs mosquitto (apt-get install mosquitto)');
t.before(assertCliBuilt);

const work = mkdtempSync(join(tmpdir(), 'edgellm-openai-serve-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

const SPEC: Spec = { name: 'openai tiny', arch: 'llama', nVocab: 320, nEmbd: 64, nLayer: 2, nHead: 4, nHeadKv: 2, headDim: 16, nFf: 96, contextLength: 512 };
const KEY = 'sk-edge-test-7f3a9c';
const MAX_BODY = 65536;

interface Node {
  daemon: ServeProcess;
  broker: Broker;
  model: string;
  port: number;
  base: string;
  modelPath: string;
}

let started: Promise<Node> | undefined;
/** One daemon for the file, started by the first test that needs it. */
function node(): Promise<Node> {
  started ??= (async () => {
    const broker = await Broker.start(mosquitto!);
    t.teardown(() => broker.destroy());
    const { path: modelPath } = writeModel(SPEC, work, { vocab: true });
    const keyFile = join(work, 'openai.key');
    writeFileSync(keyFile, `${KEY}\n`, { mode: 0o600 });
    const config = join(work, 'node.yaml');
    writeFileSync(
      config,
      [
        'node_id: big-box',
        'prefix: oai',
        `state_dir: ${join(work, 'state')}`,
        `model: ${modelPath}`,
        'broker:',
        `  url: ${broker.url}`,
        'batch:',
        '  max: 2',
        'engine:',
        '  threads: 1',
        '  context_size: 512',
        'openai:',
        `  api_key_file: ${keyFile}`,
        `  max_body_bytes: ${MAX_BODY}`,
        'log:',
        '  level: debug',
        '',
      ].join('\n'),
    );
    const port = await freePort();
    const daemon = serve(['--config', config, '--openai-port', String(port)]);
    t.teardown(() => daemon.kill());
    await daemon.waitForLog(/node big-box ready/, 60_000);
    t.match(daemon.log, new RegExp(`OpenAI-compatible API on http://127\\.0\\.0\\.1:${port}/v1 \\(API key required\\)`));
    return { daemon, broker, model: 'openai_tiny_7', port, base: `http://127.0.0.1:${port}/v1`, modelPath };
  })();
  return started;
}

function serve(args: string[]): ServeProcess {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('EDGELLM_') || k === 'NOTIFY_SOCKET' || k.startsWith('WATCHDOG_')) delete env[k];
  return new ServeProcess(process.execPath, [cli, 'serve', ...args], env);
}

const ask = (content: string, over: Record<string, unknown> = {}) => ({ messages: [{ role: 'user', content }], max_tokens: 16, temperature: 0, ...over });

t.test('GET /v1/models lists the served model in OpenAI\'s shape', needs, async (t) => {
  const { base, model } = await node();
  const list = await getJson(`${base}/models`, { key: KEY });
  t.equal(list.status, 200);
  t.match(list.body, { object: 'list', data: [{ id: model, object: 'model', created: Number, owned_by: 'edgellm' }] });
  t.equal((list.body.data as unknown[]).length, 1);
  const one = await getJson(`${base}/models/${model}`, { key: KEY });
  t.match(one.body, { id: model, object: 'model' });
  const none = await getJson(`${base}/models/gpt-4o`, { key: KEY });
  t.equal(none.status, 404);
  t.match(none.body, { error: { code: 'model_not_found', param: 'model', message: /gpt-4o.*openai_tiny_7/ } });
});

t.test('a non-streaming reply is a chat.completion with usage', needs, async (t) => {
  const { base, model } = await node();
  const r = await postJson(`${base}/chat/completions`, { model, ...ask('Hello there') }, { key: KEY });
  t.equal(r.status, 200, JSON.stringify(r.body));
  t.equal(r.headers.get('content-type'), 'application/json');
  t.same(Object.keys(r.body).sort(), ['choices', 'created', 'id', 'model', 'object', 'usage']);
  t.match(r.body, {
    id: /^chatcmpl-[0-9a-f]{32}$/,
    object: 'chat.completion',
    created: Number,
    model,
    choices: [{ index: 0, message: { role: 'assistant', content: String, refusal: null }, logprobs: null, finish_reason: /^(stop|length)$/ }],
  });
  t.ok(Math.abs((r.body.created as number) - Date.now() / 1000) < 60, 'created is now, in seconds');
  const usage = r.body.usage as { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  t.ok(usage.prompt_tokens > 3, `the chat template's tokens are counted: ${usage.prompt_tokens}`);
  t.ok(usage.completion_tokens >= 1 && usage.completion_tokens <= 16, `max_tokens holds: ${usage.completion_tokens}`);
  t.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  const choice = (r.body.choices as Array<{ finish_reason: string }>)[0]!;
  if (choice.finish_reason === 'length') t.equal(usage.completion_tokens, 16, "'length' means max_tokens tokens");

  const again = await postJson(`${base}/chat/completions`, { model, ...ask('Hello there'), max_completion_tokens: 16, max_tokens: undefined }, { key: KEY });
  t.same(again.body.choices, r.body.choices, 'temperature 0 gives the same answer; max_completion_tokens is max_tokens');
  t.not(again.body.id, r.body.id, 'each completion has its own id');
});

t.test('a streaming reply is chat.completion.chunk events ending with data: [DONE], with the same text', needs, async (t) => {
  const { base, model } = await node();
  const whole = await postJson(`${base}/chat/completions`, ask('Tell me a story'), { key: KEY });
  const s = await postStream(`${base}/chat/completions`, { ...ask('Tell me a story'), stream: true, stream_options: { include_usage: true } }, { key: KEY });
  t.equal(s.status, 200);
  t.match(s.contentType, /^text\/event-stream/);
  t.equal(s.events.at(-1), '[DONE]', 'the stream ends with [DONE]');
  t.equal(s.raw, '', 'nothing after [DONE]');
  const chunks = s.events.slice(0, -1) as Array<Record<string, unknown>>;
  const id = chunks[0]!.id;
  t.match(id, /^chatcmpl-/);
  for (const c of chunks) t.match(c, { id, object: 'chat.completion.chunk', created: Number, model }, 'every chunk carries the id, object, created and model');
  t.same(deltaOf(chunks[0]!), { role: 'assistant', content: '' }, 'the first chunk gives the role');
  const usageChunk = chunks.at(-1)!;
  t.same(usageChunk.choices, [], 'with include_usage, the last chunk has no choices...');
  t.same(usageChunk.usage, whole.body.usage, '...and the usage, as the whole reply counts it');
  const finish = chunks.at(-2)!;
  t.same(deltaOf(finish), {}, 'the finish chunk has an empty delta');
  t.equal((finish.choices as Array<{ finish_reason: string }>)[0]!.finish_reason, (whole.body.choices as Array<{ finish_reason: string }>)[0]!.finish_reason);
  for (const c of chunks.slice(0, -1)) t.equal(c.usage, null, 'with include_usage, the other chunks have usage: null');
  const content = chunks.slice(1, -2);
  t.ok(content.every((c) => (c.choices as Array<{ finish_reason: unknown }>)[0]!.finish_reason === null), 'content chunks have finish_reason null');
  t.equal(streamedText(s.events), (whole.body.choices as Array<{ message: { content: string } }>)[0]!.message.content, 'the chunks join to the non-streamed text');

  const plain = await postStream(`${base}/chat/completions`, { ...ask('Tell me a story'), stream: true }, { key: KEY });
  t.ok(plain.events.every((e) => e === '[DONE]' || !('usage' in e)), 'without include_usage no chunk has a usage field');
  t.equal(streamedText(plain.events), streamedText(s.events));
});

t.test("edgellm's own UpstreamClient uses it as its upstream, streamed and whole", needs, async (t) => {
  const { base, model } = await node();
  const whole = await postJson(`${base}/chat/completions`, ask('Once upon a time', { max_tokens: 24 }), { key: KEY });
  const expected = (whole.body.choices as Array<{ message: { content: string } }>)[0]!.message.content;

  const upstream = new UpstreamClient({ url: base, model, apiKey: new Secret(KEY), timeouts: { first_byte_ms: 30_000 } });
  const reply = upstream.chat({ messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 24, temperature: 0 });
  const pieces: string[] = [];
  for await (const piece of reply) pieces.push(piece);
  const result = await reply.result;
  t.equal(result.text, expected, 'the same answer as the API gives directly');
  t.equal(pieces.join(''), result.text, 'relayed chunk by chunk');
  t.ok(result.chunks >= 1, `${result.chunks} chunks`);
  const { prompt_tokens, completion_tokens } = whole.body.usage as { prompt_tokens: number; completion_tokens: number };
  t.same(result.usage, { prompt_tokens, completion_tokens }, 'the usage from the stream_options.include_usage chunk');
  t.equal(result.model, model);
  t.equal(result.finish_reason, (whole.body.choices as Array<{ finish_reason: string }>)[0]!.finish_reason);

  const awaited = await upstream.chat({ prompt: 'Once upon a time', max_tokens: 24, temperature: 0 }).result;
  t.equal(awaited.text, expected, 'a bare prompt goes as one user message; the result alone is the whole answer');

  const seeded = await upstream.chat({ prompt: 'Once upon a time', max_tokens: 12, temperature: 0.9, top_p: 0.9, seed: 42, stop: ['\n\n'] }).result;
  const seededAgain = await upstream.chat({ prompt: 'Once upon a time', max_tokens: 12, temperature: 0.9, top_p: 0.9, seed: 42, stop: ['\n\n'] }).result;
  t.equal(seededAgain.text, seeded.text, 'every field UpstreamClient sends is taken: a seed repeats the answer');

  const wrongKey = new UpstreamClient({ url: base, model, apiKey: new Secret('sk-wrong-key-0000') });
  const err = (await wrongKey.chat({ prompt: 'hi' }).result.catch((e: unknown) => e)) as UpstreamError;
  t.match(err, { code: 'E_UPSTREAM', failure: 'http', status: 401, message: /HTTP 401: Incorrect API key provided/ });
  t.notMatch(err.message, /sk-wrong-key/, 'the key is in no message');
  const unknown = (await upstream.chat({ prompt: 'hi', model: 'gpt-4o' }).result.catch((e: unknown) => e)) as UpstreamError;
  t.match(unknown, { status: 404, message: /HTTP 404: The model "gpt-4o" does not exist/ });
});

t.test("a Pi's daemon sends what its own model cannot hold to this node, its cloud, and relays the answer", needs, async (t) => {
  const { base, model, broker } = await node();
  const direct = await postJson(`${base}/chat/completions`, ask('Once upon a time', { max_tokens: 20 }), { key: KEY });
  // The Pi: the daemon in this process with a fake local model, this node's API as its upstream.
  const keyFile = join(work, 'pi-upstream.key');
  writeFileSync(keyFile, `${KEY}\n`, { mode: 0o600 });
  const pi = await startDaemon(
    daemonConfig({
      broker: { url: broker.url },
      prefix: 'pi',
      node_id: 'pi-4',
      state_dir: join(work, 'pi-state'),
      upstream: { url: base, model, api_key_file: keyFile, timeouts: { first_byte_ms: 30_000 } },
      policy: { max_local_prompt_tokens: 2 },
      access: { roles: { line: { models: ['*'], routes: ['local', 'cloud'] } }, devices: {}, default_role: 'line' },
    }),
  );
  t.teardown(() => pi.service.stop());
  const device = await Device.connect(broker.url, 'pi-press-4', ['pi/response/#']);
  t.teardown(() => device.close());
  await device.publish('pi/request/press-4', { id: 'r1', messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 20, temperature: 0, stream: true });
  const done = (await device.final('r1', 60_000)).body as Record<string, unknown>;
  t.match(done, { type: 'done', route: 'cloud', model, route_reason: /max_local_prompt_tokens 2/ }, `routed to the big box: ${String(done.route_reason)}`);
  const expected = (direct.body.choices as Array<{ message: { content: string } }>)[0]!.message.content;
  t.equal(done.text, expected, "the big box's answer, relayed");
  const chunks = device.for('r1').filter((r) => r.body.type === 'chunk').map((r) => r.body.text).join('');
  t.equal(chunks, expected, 'streamed to the device chunk by chunk');
  const audit = pi.service.audit as unknown as { query(q: { type: string }): Array<{ record: Record<string, unknown> }> };
  t.match(audit.query({ type: 'request' }).at(-1)?.record, { device: 'press-4', route: 'cloud', outcome: 'ok' });
});

t.test('bad requests get OpenAI-style errors with the right status', needs, async (t) => {
  const { base, model } = await node();
  const url = `${base}/chat/completions`;
  const shape = { error: { message: String, type: String } };
  const cases: Array<[string, Promise<{ status: number; body: Record<string, unknown> }>, number, Record<string, unknown>]> = [
    ['invalid JSON', postJson(url, null, { key: KEY, raw: '{"messages": [' }), 400, { error: { type: 'invalid_request_error', message: /not valid JSON/ } }],
    ['a body that is not an object', postJson(url, [1, 2], { key: KEY }), 400, { error: { message: /must be a JSON object/ } }],
    ['an unknown model', postJson(url, { model: 'llama-70b', ...ask('hi') }, { key: KEY }), 404, { error: { code: 'model_not_found', param: 'model', message: /llama-70b.*openai_tiny_7/ } }],
    ['no messages', postJson(url, { model }, { key: KEY }), 400, { error: { param: 'messages', message: /messages is missing/ } }],
    ['empty messages', postJson(url, { messages: [] }, { key: KEY }), 400, { error: { param: 'messages', message: /empty/ } }],
    ['a wrong type', postJson(url, ask('hi', { temperature: 'hot' }), { key: KEY }), 400, { error: { param: 'temperature', message: 'temperature must be a number from 0 to 2, got "hot"' } }],
    ['a bad role', postJson(url, { messages: [{ role: 'robot', content: 'x' }] }, { key: KEY }), 400, { error: { param: 'messages[0].role' } }],
    ['an image URL', postJson(url, { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x/y.png' } }] }] }, { key: KEY }), 400, { error: { param: 'messages[0].content[0].image_url.url', message: /data URLs only/ } }],
    ['n > 1', postJson(url, ask('hi', { n: 3 }), { key: KEY }), 400, { error: { param: 'n', message: /must be 1/ } }],
    ['tools', postJson(url, ask('hi', { tools: [{ type: 'function', function: { name: 'f' } }] }), { key: KEY }), 400, { error: { param: 'tools', message: /does not call tools/ } }],
    ['JSON mode', postJson(url, ask('hi', { response_format: { type: 'json_object' } }), { key: KEY }), 400, { error: { param: 'response_format' } }],
    ['an unknown field', postJson(url, ask('hi', { temprature: 0 }), { key: KEY }), 400, { error: { param: 'temprature', message: 'unrecognized request argument supplied: temprature' } }],
    ['stream_options without stream', postJson(url, ask('hi', { stream_options: { include_usage: true } }), { key: KEY }), 400, { error: { param: 'stream_options' } }],
    ['max_tokens above limits.max_tokens', postJson(url, ask('hi', { max_tokens: 5000 }), { key: KEY }), 400, { error: { message: /at most 1024 \(limits\.max_tokens\)/ } }],
    ['prompt + max_tokens beyond the context', postJson(url, ask('x '.repeat(300), { max_tokens: 400 }), { key: KEY }), 400, { error: { code: 'context_length_exceeded', message: /context holds 512/ } }],
    ['no key', postJson(url, ask('hi')), 401, { error: { code: 'invalid_api_key', message: /No API key provided/ } }],
    ['a wrong key', postJson(url, ask('hi'), { key: 'sk-not-it' }), 401, { error: { code: 'invalid_api_key', message: /Incorrect API key/ } }],
    ['not JSON content', postJson(url, ask('hi'), { key: KEY, contentType: 'text/plain' }), 415, { error: { message: /Content-Type: application\/json/ } }],
    ['a body over openai.max_body_bytes', postJson(url, ask('y'.repeat(MAX_BODY)), { key: KEY }), 413, { error: { message: /larger than 65536 bytes \(openai\.max_body_bytes\)/ } }],
    ['GET on the completions path', getJson(url, { key: KEY }), 405, { error: { message: /use POST/ } }],
    ['POST on the models path', getJson(`${base}/models`, { key: KEY, method: 'POST' }), 405, { error: { message: /use GET/ } }],
    ['an unknown path', getJson(`${base}/audio/speech`, { key: KEY }), 404, { error: { message: /Invalid URL \(GET \/v1\/audio\/speech\): this server has POST \/v1\/chat\/completions, POST \/v1\/embeddings and GET \/v1\/models/ } }],
    ['GET on the embeddings path', getJson(`${base}/embeddings`, { key: KEY }), 405, { error: { message: 'GET is not allowed here: use POST' } }],
    ['embeddings of a generative model', postJson(`${base}/embeddings`, { model, input: 'hi' }, { key: KEY }), 400, { error: { code: 'E_NOT_EMBEDDING_MODEL', message: /generative model/ } }],
  ];
  for (const [what, reply, status, body] of cases) {
    const r = await reply;
    t.equal(r.status, status, `${what}: HTTP ${status}`);
    t.match(r.body, shape, `${what}: {"error": {message, type, ...}}`);
    t.match(r.body, body, `${what}: ${JSON.stringify(r.body)}`);
  }
  const noKey = await getJson(`${base}/models`);
  t.equal(noKey.status, 401, 'the model list needs the key too');
  t.equal(noKey.headers.get('www-authenticate'), 'Bearer');

  const ok = await postJson(url, ask('hi', { user: 'press-4', metadata: { line: '1' }, n: 1, logprobs: false, tools: [], tool_choice: 'none', stream: false, seed: null, stop: 'END', response_format: { type: 'text' } }), { key: KEY });
  t.equal(ok.status, 200, `fields that change nothing here are taken: ${JSON.stringify(ok.body)}`);
  const text = await postJson(url, { messages: [{ role: 'developer', content: 'Be brief.' }, { role: 'user', content: [{ type: 'text', text: 'Hello' }, { type: 'text', text: ' there' }] }], max_tokens: 4 }, { key: KEY });
  t.equal(text.status, 200, `the developer role and text parts are taken: ${JSON.stringify(text.body)}`);
});

t.test('API requests and MQTT requests are served together on the same slots', needs, async (t) => {
  const { base, broker } = await node();
  const device = await Device.connect(broker.url, 'oai-device', ['oai/response/#']);
  t.teardown(() => device.close());
  const api = [0, 1, 2].map((i) =>
    i === 1
      ? postStream(`${base}/chat/completions`, { ...ask(`story ${i}`, { max_tokens: 48 }), stream: true }, { key: KEY }).then((s) => ({ status: s.status, text: streamedText(s.events), last: s.events.at(-1) }))
      : postJson(`${base}/chat/completions`, ask(`story ${i}`, { max_tokens: 48 }), { key: KEY }).then((r) => ({ status: r.status, text: 'ok', last: '[DONE]' as SseEvent })),
  );
  await Promise.all([0, 1].map((i) => device.publish('oai/request/press-1', { id: `m${i}`, messages: [{ role: 'user', content: `story m${i}` }], max_tokens: 48, temperature: 0 })));
  const replies = await Promise.all(api);
  for (const r of replies) {
    t.equal(r.status, 200);
    t.equal(r.last, '[DONE]');
  }
  for (const id of ['m0', 'm1']) t.match((await device.final(id, 30_000)).body, { type: 'done', route: 'local' }, `MQTT request ${id} answered`);
});

t.test('serve refuses a taken --openai-port, and one that is not a number, with a clear error', needs, async (t) => {
  const { port, modelPath } = await node();
  const second = serve(['--model', modelPath, '--state-dir', join(work, 'second'), '--broker', 'mqtt://127.0.0.1:1', '--openai-port', String(port)]);
  t.teardown(() => second.kill());
  const exit = await second.exited;
  t.equal(exit.code, 2, second.log);
  t.match(second.log, new RegExp(`edgellm: E_PORT_IN_USE: the OpenAI-compatible API's port ${port} on 127\\.0\\.0\\.1 is already in use: .*--openai-port`));

  const bad = run(['serve', '--model', modelPath, '--openai-port', 'eighty']);
  t.equal(bad.status, 2);
  t.match(bad.stderr, /E_CONFIG: key "openai\.port" \(from --openai-port\) must be a port number from 1 to 65535, got "eighty"/);
  const printed = run(['serve', '--model', modelPath, '--openai-port', '8088', '--print-config']);
  t.equal(printed.status, 0, printed.stderr);
  t.match(printed.stdout, /^openai:\n(  .*\n)*  port: 8088\n/m, 'the flag sets openai.port');
  t.match(printed.stdout, /^openai:\n(  .*\n)*  host: 127\.0\.0\.1\n/m, 'openai.host defaults to loopback');
});

t.test('API requests are audited (device openai-api), refusals too', needs, async (t) => {
  const { base, model } = await node();
  const ok = await postJson(`${base}/chat/completions`, { model, ...ask('audit me', { max_tokens: 3 }) }, { key: KEY });
  t.equal(ok.status, 200);
  const unknown = await postJson(`${base}/chat/completions`, { model: 'no-such-model', ...ask('x') }, { key: KEY });
  t.equal(unknown.status, 404);
  // The daemon writes the record once the generation's result settles, right after the reply.
  let records: Array<Record<string, any>> = [];
  for (let i = 0; i < 50; i++) {
    const r = run(['audit', '--state-dir', join(work, 'state'), '--device', 'openai-api', '--json', '--limit', '1000']);
    t.equal(r.status, 0, r.stderr);
    records = r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);
    if (records.some((x) => x.outcome === 'denied') && records.some((x) => x.outcome === 'ok' && x.completion_tokens === 3)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  t.ok(records.some((x) => x.type === 'request' && x.model === model && x.route === 'local' && x.allowed === true && x.outcome === 'ok' && x.completion_tokens === 3), 'the answered request has its record');
  t.ok(records.some((x) => x.allowed === false && x.outcome === 'denied' && x.denied?.code === 'E_UNKNOWN_MODEL'), 'the refused one too, with its code');
  t.notOk(JSON.stringify(records).includes(KEY), 'no key in the audit records');
});

t.test('SIGTERM stops the daemon and its API cleanly; the key was never logged', needs, async (t) => {
  const { daemon, base } = await node();
  const exit = await daemon.stop();
  t.same(exit, { code: 0, signal: null }, 'drains and exits 0');
  t.match(daemon.log, /openai chatcmpl-[0-9a-f]+: (stop|length), \d+ \+ \d+ tokens/, 'each API request is logged at debug, by id');
  t.notMatch(daemon.log, new RegExp(KEY), 'the API key is in no log line');
  t.match(daemon.log, /openai: POST \/v1\/chat\/completions from 127\.0\.0\.1 refused: a wrong API key/, 'refused keys are logged...');
  t.notMatch(daemon.log, /sk-not-it|sk-wrong-key/, '...without the key that was sent');
  await t.rejects(fetch(`${base}/models`), 'the port is closed');
});
