// POST /v1/embeddings: the OpenAI-compatible server over the daemon's backend (LocalChat) and the real
// engine on a random bert (an embedding model) and a random llama (a generative one). OpenAI's
// request forms and reply shape, float and base64 vectors equal to the engine's, usage, and a
// specific error for each bad request.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalChat } from '../../src/daemon/local-chat.js';
import { openLocalModel } from '../../src/daemon/local-model.js';
import type { LocalModel } from '../../src/daemon/engine-port.js';
import { createLogger } from '../../src/log.js';
import { RequestQueue } from '../../src/scheduler/request-queue.js';
import { OpenAIServer } from '../../src/transport/http/openai-server.js';
import { loadModel } from '../../src/engine/model.js';
import { WP, writeEncoder } from '../fixtures/random-encoder.js';
import { writeModel } from '../fixtures/random-model.js';
import { daemonConfig } from '../helpers/daemon.js';
import { postJson } from '../helpers/openai-client.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-openai-embed-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const encoderPath = writeEncoder({ name: 'api bert', arch: 'bert', nEmbd: 32, nLayer: 1, nHead: 2, nFf: 64, contextLength: 16, pooling: 2 }, dir, 300);
const { path: decoderPath } = writeModel(
  { name: 'api llama', arch: 'llama', nVocab: 300, nEmbd: 32, nLayer: 1, nHead: 2, nHeadKv: 2, headDim: 16, nFf: 64 },
  dir,
  { vocab: true },
);

let url = '';
t.before(async () => {
  const models = new Map<string, LocalModel>();
  for (const p of [encoderPath, decoderPath]) {
    const m = await openLocalModel(p, { threads: 1 });
    models.set(m.name, m);
  }
  const backend = new LocalChat({ config: { limits: limits(), metrics: daemonConfig({}).metrics }, queue: new RequestQueue({ slots: 1, maxWaiting: 4 }), models, log: createLogger('error') });
  const server = new OpenAIServer({ host: '127.0.0.1', port: 0, maxBodyBytes: 65536, backend, log: createLogger('error') });
  await server.start();
  url = `http://127.0.0.1:${server.address().port}/v1/embeddings`;
  t.teardown(async () => {
    await server.close();
    for (const m of models.values()) await m.close();
  });
});

function limits() {
  return { max_prompt_bytes: 200, max_tokens: 64, queue_depth: 4, drain_s: 1 } as never;
}

/** The engine's own vector for the same input. */
async function engineVector(input: string | number[]): Promise<number[]> {
  const m = await loadModel(encoderPath, { threads: 1 });
  try {
    return Array.from(await m.embed(input));
  } finally {
    m.close();
  }
}

interface Reply {
  object: string;
  data: Array<{ object: string; index: number; embedding: number[] | string }>;
  model: string;
  usage: { prompt_tokens: number; total_tokens: number };
}

t.test('a string, an array of strings and token ids: one float vector per input, in order, with usage', async (t) => {
  const r = await postJson(url, { model: 'api_bert_11', input: ['the cat', 'hello world!'] });
  t.equal(r.status, 200, JSON.stringify(r.body));
  const body = r.body as unknown as Reply;
  t.equal(body.object, 'list');
  t.equal(body.model, 'api_bert_11');
  t.same(body.data.map((d) => [d.object, d.index]), [['embedding', 0], ['embedding', 1]]);
  t.same(body.data[0]!.embedding, await engineVector('the cat'));
  t.same(body.data[1]!.embedding, await engineVector('hello world!'));
  t.same(body.usage, { prompt_tokens: 4 + 5, total_tokens: 9 }, '[CLS] the cat [SEP], [CLS] hello world ! [SEP]');

  const one = await postJson(url, { model: 'api_bert_11', input: 'the cat' });
  t.same((one.body as unknown as Reply).data[0]!.embedding, await engineVector('the cat'));
  const ids = [WP.CLS, 7, 9, WP.SEP];
  const tokens = await postJson(url, { model: 'api_bert_11', input: [ids, ids.slice(0, 3)] });
  t.equal(tokens.status, 200);
  t.same((tokens.body as unknown as Reply).data[0]!.embedding, await engineVector(ids));
  const single = await postJson(url, { model: 'api_bert_11', input: ids });
  t.equal((single.body as unknown as Reply).data.length, 1, 'an array of ids is one input');
});

t.test('encoding_format base64: the little-endian float32 bytes of the same vector', async (t) => {
  const r = await postJson(url, { model: 'api_bert_11', input: 'the cat', encoding_format: 'base64' });
  t.equal(r.status, 200);
  const b64 = (r.body as unknown as Reply).data[0]!.embedding as string;
  const bytes = Buffer.from(b64, 'base64');
  const v = Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4));
  t.same(v, await engineVector('the cat'));
});

t.test('bad requests: OpenAI error bodies with the field and a specific code', async (t) => {
  const cases: Array<[unknown, number, string | null, string | RegExp]> = [
    [{ model: 'api_bert_11', input: '' }, 400, 'input', 'E_EMPTY_INPUT'],
    [{ model: 'api_bert_11', input: [] }, 400, 'input', /empty array/],
    [{ model: 'api_bert_11', input: [{ text: 'x' }] }, 400, 'input', /input\[0\]/],
    [{ model: 'api_bert_11', input: 'x', encoding_format: 'int8' }, 400, 'encoding_format', /"float" or "base64"/],
    [{ model: 'api_bert_11', input: 'x', dimensions: 8 }, 400, 'dimensions', /not supported/],
    [{ model: 'api_bert_11', input: 'x', temperature: 1 }, 400, 'temperature', /not a field/],
    [{ model: 'nope', input: 'x' }, 404, null, 'model_not_found'],
    [{ model: 'api_llama_7', input: 'x' }, 400, null, 'E_NOT_EMBEDDING_MODEL'],
    [{ model: 'api_bert_11', input: 'the '.repeat(20) }, 400, 'input', 'context_length_exceeded'],
    [{ model: 'api_bert_11', input: 'x'.repeat(201) }, 400, null, 'context_length_exceeded'],
  ];
  for (const [body, status, param, code] of cases) {
    const r = await postJson(url, body);
    const e = (r.body as { error: { param: string | null; code: string; message: string } }).error;
    t.equal(r.status, status, JSON.stringify(body));
    if (param !== null) t.equal(e.param, param, `param of ${JSON.stringify(body)}`);
    if (typeof code === 'string') t.equal(e.code, code, `code of ${JSON.stringify(body)}`);
    else t.match(e.message, code);
  }
  const chat = await postJson(url.replace('embeddings', 'chat/completions'), { model: 'api_bert_11', messages: [{ role: 'user', content: 'hi' }] });
  t.equal(chat.status, 400, 'a chat completion of an embedding model');
  t.match(chat.body, { error: { code: 'E_NOT_GENERATIVE', message: /embedding model/ } });
});
