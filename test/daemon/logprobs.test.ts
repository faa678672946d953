// Log-probabilities through the whole daemon on stories260K (../shared/models) and a real mosquitto:
// MQTT chunks and done replies, the OpenAI endpoint as the official `openai` client parses it
// (streaming and not), the refusals, the answer cache's behaviour, and the drift gauges on /metrics.
import t from 'tap';
import OpenAI from 'openai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../src/log.js';
import { Service } from '../../src/daemon/service.js';
import { openLocalModel } from '../../src/daemon/local-model.js';
import type { TokenLogprob } from '../../src/logprobs.js';
import { Broker, freePort, mosquittoFor } from '../helpers/broker.js';
import { daemonConfig } from '../helpers/daemon.js';
import { Device } from '../helpers/device.js';
import { parsePrometheus } from '../helpers/prometheus.js';
import { hasStories, requires, stories } from '../helpers/serve.js';

const bin = mosquittoFor('the logprobs daemon tests');
const needs = requires('logprobs.test', bin !== undefined && hasStories(), `the logprobs daemon tests need mosquitto and ${stories}`);

const work = mkdtempSync(join(tmpdir(), 'edgellm-logprobs-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

t.test('logprobs through MQTT, the OpenAI endpoint and /metrics', needs, async (t) => {
  const broker = await Broker.start(bin!);
  t.teardown(() => broker.destroy());
  const [openaiPort, httpPort] = [await freePort(), await freePort()];
  const config = daemonConfig({
    model: stories,
    broker: { url: broker.url },
    prefix: 'lp',
    node_id: 'lp1',
    state_dir: join(work, 'state'),
    engine: { threads: 1, context_size: 256 },
    openai: { port: openaiPort },
    http: { port: httpPort },
    metrics: { interval_s: 30, drift_sample: 1 }, // every request measured: the gauges are deterministic
  });
  const service = new Service(config, (path) => openLocalModel(path, { threads: 1, contextSize: 256, maxSequences: 4 }), createLogger('error'));
  await service.start();
  t.teardown(() => service.stop());
  const device = await Device.connect(broker.url, 'lp-device', ['lp/response/#']);
  t.teardown(() => device.close());
  const request = (body: object) => device.publish('lp/request/press', body);

  t.test('MQTT: chunks carry their tokens, the done reply all of them, never from the cache', async (t) => {
    const ask = { prompt: 'Once upon a time', max_tokens: 12, temperature: 0, stream: true, logprobs: true, top_logprobs: 3 };
    await request({ id: 'a', ...ask });
    const done = (await device.final('a')).body as { text: string; cached: boolean; usage: { completion_tokens: number }; logprobs: { content: TokenLogprob[] } };
    const content = done.logprobs.content;
    t.equal(content.length, done.usage.completion_tokens, 'one entry per generated token');
    t.equal(content.map((c) => c.token).join(''), done.text, 'the tokens spell the text');
    for (const c of content) {
      t.equal(c.top_logprobs.length, 3);
      t.equal(c.top_logprobs[0]!.id, c.id, 'greedy: the token is the most probable');
      t.ok(c.logprob <= 0 && Number.isFinite(c.logprob));
      t.same(c.bytes, Array.from(Buffer.from(c.token)), 'bytes are the token text in UTF-8 (ASCII here)');
    }
    const chunks = device.for('a').filter((m) => m.body.type === 'chunk');
    const streamed = chunks.flatMap((m) => (m.body.logprobs as { content: TokenLogprob[] }).content);
    t.same(streamed.map((c) => c.id), content.map((c) => c.id), 'the chunks carried every token once, in order');
    await request({ id: 'b', ...ask });
    const again = (await device.final('b')).body;
    t.equal(again.cached, false, 'a logprobs request is generated again: the cache keeps no logprobs');
    t.same(again.logprobs, done.logprobs, 'greedy: the same log-probabilities');
  });

  t.test('MQTT: bad logprobs values get E_BAD_LOGPROBS', async (t) => {
    const cases: Array<[object, RegExp]> = [
      [{ logprobs: true, top_logprobs: 21 }, /top_logprobs must be a whole number from 0 to 20, got 21/],
      [{ top_logprobs: 2 }, /top_logprobs needs logprobs: true/],
      [{ logprobs: true, route: 'cloud' }, /local model only/],
    ];
    let i = 0;
    for (const [fields, message] of cases) {
      const id = `bad${i++}`;
      await request({ id, prompt: 'Once', max_tokens: 2, ...fields });
      const reply = (await device.final(id)).body as { type: string; error: { code: string; message: string } };
      t.equal(reply.type, 'error');
      t.equal(reply.error.code, 'E_BAD_LOGPROBS', JSON.stringify(fields));
      t.match(reply.error.message, message);
    }
  });

  const client = new OpenAI({ baseURL: `http://127.0.0.1:${openaiPort}/v1`, apiKey: 'unused', maxRetries: 0 });

  t.test('OpenAI: the official client parses logprobs of a completion', async (t) => {
    const completion = await client.chat.completions.create({
      model: 'stories260K',
      messages: [{ role: 'user', content: 'Once upon a time' }],
      max_completion_tokens: 8,
      temperature: 0,
      logprobs: true,
      top_logprobs: 2,
    });
    const lp = completion.choices[0]!.logprobs!;
    t.equal(lp.content!.length, completion.usage!.completion_tokens);
    t.equal(lp.content!.map((c) => c.token).join(''), completion.choices[0]!.message.content);
    for (const c of lp.content!) {
      t.equal(c.top_logprobs.length, 2);
      t.equal(c.top_logprobs[0]!.token, c.token);
      t.same(Object.keys(c).sort(), ['bytes', 'logprob', 'token', 'top_logprobs'], "exactly OpenAI's fields");
    }
    const plain = await client.chat.completions.create({ model: 'stories260K', messages: [{ role: 'user', content: 'Once' }], max_completion_tokens: 2 });
    t.equal(plain.choices[0]!.logprobs, null, 'not asked: null, as OpenAI sends it');
  });

  t.test('OpenAI: the official client parses streamed logprobs', async (t) => {
    const stream = await client.chat.completions.create({
      model: 'stories260K',
      messages: [{ role: 'user', content: 'Once upon a time' }],
      max_completion_tokens: 8,
      temperature: 0,
      logprobs: true,
      top_logprobs: 1,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    const tokens: string[] = [];
    let usage = 0;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage.completion_tokens;
      const choice = chunk.choices[0];
      if (!choice) continue;
      text += choice.delta.content ?? '';
      for (const c of choice.logprobs?.content ?? []) tokens.push(c.token);
    }
    t.equal(tokens.length, usage, 'every token once');
    t.equal(tokens.join(''), text);
  });

  t.test('OpenAI: top_logprobs 21 is a 400 naming the field', async (t) => {
    const err = await client.chat.completions
      .create({ model: 'stories260K', messages: [{ role: 'user', content: 'x' }], logprobs: true, top_logprobs: 21 })
      .then(() => undefined, (e: unknown) => e);
    t.ok(err instanceof OpenAI.BadRequestError, String(err));
    t.equal((err as InstanceType<typeof OpenAI.BadRequestError>).param, 'top_logprobs');
    t.match((err as Error).message, /from 0 to 20, got 21/);
  });

  t.test('/metrics: the drift gauges hold the mean log-probability per token of prompts and answers', async (t) => {
    const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    const m = parsePrometheus(text).samples;
    const prompt = m.find((s) => s.name === 'edgellm_prompt_logprob_mean' && s.labels.model === 'stories260K');
    const completion = m.find((s) => s.name === 'edgellm_completion_logprob_mean' && s.labels.model === 'stories260K');
    t.ok(prompt && prompt.value < 0 && prompt.value > -20, `prompt mean ${prompt?.value}`);
    t.ok(completion && completion.value < 0, `completion mean ${completion?.value}`);
    const samples = m.find((s) => s.name === 'edgellm_drift_samples_total' && s.labels.model === 'stories260K');
    t.ok(samples && samples.value >= 4, `measured requests ${samples?.value}`);
  });
});
