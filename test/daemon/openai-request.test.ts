// The OpenAI-compatible API's request checks and its config keys, without a daemon: what is honoured,
// what is accepted because it changes nothing, what is refused and how the refusal names the field.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { loadConfig } from '../../src/config.js';
import { EdgeError } from '../../src/errors.js';
import { parseChatRequest, RequestFieldError } from '../../src/transport/http/openai-request.js';
import { readOpenAIKey } from '../../src/transport/http/openai-server.js';
import type { TapTest } from '../fixtures/paths.js';

const user = (content: unknown) => ({ messages: [{ role: 'user', content }] });

t.test('logprobs and top_logprobs are taken as OpenAI defines them', async (t) => {
  t.match(parseChatRequest({ messages: [{ role: 'user', content: 'x' }], logprobs: true, top_logprobs: 5 }), { logprobs: true, top_logprobs: 5 });
  t.match(parseChatRequest({ messages: [{ role: 'user', content: 'x' }], logprobs: true }), { logprobs: true, top_logprobs: 0 });
  const off = parseChatRequest({ messages: [{ role: 'user', content: 'x' }], logprobs: false, top_logprobs: null });
  t.equal(off.logprobs, undefined, 'logprobs: false asks for nothing');
});

function refused(t: TapTest, body: unknown, param: string | null, message: RegExp | string): void {
  try {
    parseChatRequest(body);
    t.fail(`expected a refusal naming ${param}`);
  } catch (err) {
    t.ok(err instanceof RequestFieldError, String(err));
    t.equal((err as RequestFieldError).param, param, `param ${param}`);
    t.match((err as Error).message, message);
  }
}

t.test('the honoured fields become the request the engine runs', async (t) => {
  const r = parseChatRequest({
    model: 'qwen',
    messages: [
      { role: 'developer', content: 'Be brief.' },
      { role: 'user', content: [{ type: 'text', text: 'Hello' }, { type: 'text', text: ', there' }], name: 'press-4' },
      { role: 'assistant', content: 'Hi.', refusal: null, tool_calls: [] },
      { role: 'user', content: 'Again' },
    ],
    max_completion_tokens: 32,
    temperature: 0.2,
    top_p: 0.9,
    top_k: 20,
    min_p: 0.1,
    presence_penalty: 0.5,
    frequency_penalty: -0.5,
    seed: 4294967295,
    stop: 'END',
    stream: true,
    stream_options: { include_usage: true },
  });
  t.same(r, {
    model: 'qwen',
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hello, there' },
      { role: 'assistant', content: 'Hi.' },
      { role: 'user', content: 'Again' },
    ],
    max_tokens: 32,
    temperature: 0.2,
    top_p: 0.9,
    top_k: 20,
    min_p: 0.1,
    presence_penalty: 0.5,
    frequency_penalty: -0.5,
    seed: 4294967295,
    stop: ['END'],
    stream: true,
    include_usage: true,
  });
});

t.test('null means absent, as OpenAI clients send it; harmless fields are taken', async (t) => {
  const r = parseChatRequest({
    ...user('hi'),
    model: null,
    max_tokens: null,
    temperature: null,
    stop: null,
    stream: null,
    n: 1,
    logprobs: false,
    tools: [],
    tool_choice: 'none',
    response_format: { type: 'text' },
    user: 'press-4',
    metadata: { line: '1' },
    store: false,
    parallel_tool_calls: false,
  });
  // user is kept: it is the key A/B variants stick to.
  t.same(r, { messages: [{ role: 'user', content: 'hi' }], stream: false, include_usage: false, user: 'press-4' });
  t.throws(() => parseChatRequest({ ...user('hi'), user: 7 }), { param: 'user', message: /user must be a non-empty string, got/ });
  t.throws(() => parseChatRequest({ ...user('hi'), variant: '' }), { param: 'variant', message: /variant must be a non-empty string/ });
  t.same(parseChatRequest({ ...user('hi'), variant: 'large' }).variant, 'large');
  t.same(parseChatRequest({ ...user('hi'), max_tokens: 8, max_completion_tokens: 8 }).max_tokens, 8, 'both limits, when they agree');
  t.same(parseChatRequest({ ...user('hi'), stop: [] }).stop, undefined, 'an empty stop list is no stop');
});

t.test('fields this node cannot honour are refused, naming the field', async (t) => {
  refused(t, [], null, /must be a JSON object/);
  refused(t, 'hi', null, /must be a JSON object/);
  refused(t, {}, 'messages', /messages is missing/);
  refused(t, { messages: 'hi' }, 'messages', /must be a list/);
  refused(t, { messages: [] }, 'messages', /empty/);
  refused(t, { messages: ['hi'] }, 'messages[0]', /must be an object/);
  refused(t, { messages: [{ role: 'function', content: 'x' }] }, 'messages[0].role', /must be one of system, developer, user, assistant, tool, got "function"/);
  refused(t, { messages: [{ role: 'user' }] }, 'messages[0].content', /must be text or a list of content parts \(text, image_url \(a base64 data URL\) and input_audio\), got nothing/);
  refused(t, { messages: [{ role: 'user', content: 'x', mood: 'happy' }] }, 'messages[0].mood', /unrecognized request argument supplied: messages\[0\]\.mood/);
  refused(t, user([{ type: 'file', file: {} }]), 'messages[0].content[0].type', /"file" is not supported: content parts are text, image_url/);
  refused(t, user([{ type: 'input_audio', input_audio: { data: 'AAAA', format: 'aac' } }]), 'messages[0].content[0].input_audio.format', /"aac" is not supported: send the audio as "wav" or "mp3"/);
  refused(t, user([{ type: 'image_url', image_url: { url: 'data:image/png;base64,%%%%' } }]), 'messages[0].content[0].image_url.url', /not valid base64/);
  refused(t, user([{ type: 'text', text: 5 }]), 'messages[0].content[0].text', /must be text/);
  const image = { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } };
  refused(t, { ...user([image]), model: 'qwen+tone' }, 'adapter', /a LoRA adapter runs on the local text model, and a request with image or audio parts is answered by the upstream/);
  refused(t, { ...user([image]), adapter: 'tone' }, 'adapter', /drop the adapter, or send the text without the parts/);
  refused(t, { messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'c1' }] }] }, 'messages[0].tool_calls', /does not call tools/);
  refused(t, { ...user('x'), model: '' }, 'model', /non-empty string/);
  refused(t, { ...user('x'), max_tokens: 0 }, 'max_tokens', /whole number >= 1, got number 0/);
  refused(t, { ...user('x'), max_tokens: 2.5 }, 'max_tokens', /whole number/);
  refused(t, { ...user('x'), max_tokens: 8, max_completion_tokens: 9 }, 'max_tokens', /disagree/);
  refused(t, { ...user('x'), temperature: 3 }, 'temperature', 'temperature must be a number from 0 to 2, got number 3');
  refused(t, { ...user('x'), top_p: -0.1 }, 'top_p', /from 0 to 1/);
  refused(t, { ...user('x'), top_p: 0 }, 'top_p', /above 0, at most 1/);
  refused(t, { ...user('x'), presence_penalty: 2.5 }, 'presence_penalty', /from -2 to 2/);
  refused(t, { ...user('x'), seed: -1 }, 'seed', /from 0 to 4294967295/);
  refused(t, { ...user('x'), stop: [1] }, 'stop', /string or a list of strings/);
  refused(t, { ...user('x'), stop: [''] }, 'stop', /must not be empty/);
  refused(t, { ...user('x'), stop: Array.from({ length: 17 }, (_, i) => `s${i}`) }, 'stop', /at most 16/);
  refused(t, { ...user('x'), stream: 'yes' }, 'stream', /true or false/);
  refused(t, { ...user('x'), stream: true, stream_options: { include_usage: 'yes' } }, 'stream_options.include_usage', /true or false/);
  refused(t, { ...user('x'), stream: true, stream_options: { chunk_size: 4 } }, 'stream_options.chunk_size', /unrecognized/);
  refused(t, { ...user('x'), n: 2 }, 'n', /must be 1/);
  refused(t, { ...user('x'), logprobs: true, top_logprobs: 21 }, 'top_logprobs', 'top_logprobs must be a whole number from 0 to 20, got 21');
  refused(t, { ...user('x'), logprobs: true, top_logprobs: 1.5 }, 'top_logprobs', /from 0 to 20, got 1.5/);
  refused(t, { ...user('x'), top_logprobs: 3 }, 'top_logprobs', 'top_logprobs needs logprobs: true as well');
  refused(t, { ...user('x'), logprobs: 'yes' }, 'logprobs', /logprobs must be true or false, got "yes"/);
  refused(t, { ...user('x'), logit_bias: { '50256': -100 } }, 'logit_bias', /cannot bias tokens/);
  refused(t, { ...user('x'), tool_choice: 'auto' }, 'tool_choice', /does not call tools/);
  refused(t, { ...user('x'), response_format: { type: 'json_schema', json_schema: {} } }, 'response_format', /no JSON mode/);
  refused(t, { ...user('x'), modalities: ['text', 'audio'] }, 'modalities', /text only/);
  refused(t, { ...user('x'), reasoning_effort: 'low' }, 'reasoning_effort', /not supported/);
  refused(t, { ...user('x'), best_of: 2 }, 'best_of', 'unrecognized request argument supplied: best_of');
});

t.test('openai.* config: off by default, on with a port from the file, a variable or the flag', async (t) => {
  const c = loadConfig({ env: {} });
  t.equal(c.openai.port, undefined, 'no port: no API');
  t.equal(c.openai.host, '127.0.0.1', 'loopback unless told otherwise');
  t.equal(c.openai.max_body_bytes, 1048576);
  t.equal(loadConfig({ env: { EDGELLM_OPENAI_PORT: '8080', EDGELLM_OPENAI_HOST: '0.0.0.0' } }).openai.port, 8080);
  t.equal(loadConfig({ env: { EDGELLM_OPENAI_PORT: '8080' }, flags: { openaiPort: 9090 } }).openai.port, 9090, 'the flag wins');
  for (const [env, re] of [
    [{ EDGELLM_OPENAI_PORT: '70000' }, /key "openai\.port" \(from EDGELLM_OPENAI_PORT\) must be a port number from 1 to 65535, got number 70000/],
    [{ EDGELLM_OPENAI_PORT: 'http' }, /openai\.port.*must be a port number/],
    [{ EDGELLM_OPENAI_MAX_BODY_BYTES: '10' }, /openai\.max_body_bytes.*>= 1024/],
  ] as const) {
    t.throws(() => loadConfig({ env }), { code: 'E_CONFIG', message: re });
  }
});

t.test('openai.api_key_file: the key is read once, trimmed, and never printed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-openai-key-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  t.equal(readOpenAIKey(undefined), undefined, 'no file: no key asked');
  const file = join(dir, 'key');
  writeFileSync(file, '  sk-lan-secret-1\n');
  const key = readOpenAIKey(file)!;
  t.equal(key.reveal(), 'sk-lan-secret-1');
  t.equal(`${key} ${JSON.stringify({ key })} ${inspect(key)}`, '[redacted] {"key":"[redacted]"} [redacted]');
  writeFileSync(file, '\n \n');
  t.throws(() => readOpenAIKey(file), new EdgeError('E_CONFIG', `openai.api_key_file ${file} is empty: write the key clients must send into it, or remove the setting to ask for none`));
  t.throws(() => readOpenAIKey(join(dir, 'missing')), { code: 'E_CONFIG', message: /cannot be read \(ENOENT\).*mode 0600/ });
});
