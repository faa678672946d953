// model.generate(): text in, text out over the native decode loop, on the real models in
// ../shared/models (SOURCES.md).
import t from 'tap';
import { EdgeError } from '../src/errors.js';
import { SAMPLING_DEFAULTS, type GenerateRequest, type GenerateResult } from '../src/engine/generate.js';
import { loadModel, type Model } from '../src/engine/model.js';
import { requireModel as requireSharedModel, type TapTest } from './fixtures/paths.js';


/** The real-model tests run when ../shared/models is there; in CI (CI=true) it must be. */
const requireModel = (t: TapTest, file: string) => requireSharedModel(t, file, `${file} generate`);

const models = new Map<string, Model>();
async function model(t: TapTest, file: string): Promise<Model | undefined> {
  const path = requireModel(t, file);
  if (!path) return undefined;
  let m = models.get(file);
  if (!m) {
    m = await loadModel(path, { threads: 2, contextSize: 512, maxSequences: 4 });
    models.set(file, m);
  }
  return m;
}
t.teardown(() => {
  for (const m of models.values()) m.close();
});

async function collect(m: Model, req: GenerateRequest): Promise<{ chunks: string[]; result: GenerateResult }> {
  const gen = m.generate(req);
  const chunks: string[] = [];
  for (;;) {
    const step = await gen.next();
    if (step.done) return { chunks, result: step.value };
    chunks.push(step.value);
  }
}

function throwsCode(t: TapTest, fn: () => unknown, code: string, ...parts: RegExp[]): void {
  try {
    fn();
    t.fail(`expected ${code}`);
  } catch (err) {
    t.ok(err instanceof EdgeError, 'an EdgeError');
    t.equal((err as EdgeError).code, code, (err as Error).message);
    for (const re of parts) t.match((err as Error).message, re);
  }
}

t.test('greedy stories260K continues "Once upon a time" with the reference text', async (t) => {
  const m = await model(t, 'stories260K.gguf');
  if (!m) return;
  const { chunks, result } = await collect(m, { prompt: 'Once upon a time', max_tokens: 30, temperature: 0 });
  t.ok(result.text.startsWith(', there was a little girl named Lily'), result.text);
  t.equal(chunks.join(''), result.text, 'the chunks are the text');
  t.ok(chunks.length > 1, 'the text streams in several chunks');
  t.equal(result.finish_reason, 'length');
  t.equal(result.usage.completion_tokens, 30);
  t.equal(result.usage.prompt_tokens, 5, 'BOS + 4 tokens');
  t.equal(result.sampling.temperature, 0);
  t.ok(result.timings.total_ms >= result.timings.ttft_ms && result.timings.ttft_ms > 0);
  t.ok(result.timings.decode_tokens_per_s > 0);
});

t.test('every result states its sampling parameters with the defaults filled in', async (t) => {
  const m = await model(t, 'stories260K.gguf');
  if (!m) return;
  const r = await m.generate({ prompt: 'Hi', max_tokens: 2 }).result;
  t.same({ ...r.sampling, seed: 0 }, { ...SAMPLING_DEFAULTS, seed: 0 });
  t.ok(Number.isSafeInteger(r.sampling.seed), `a random seed is reported: ${r.sampling.seed}`);
  const again = await m.generate({ prompt: 'Hi', max_tokens: 2, seed: r.sampling.seed }).result;
  t.equal(again.text, r.text, 'the reported seed reproduces the text');
});

t.test('TinyLLama-v0 writes coherent text', async (t) => {
  const m = await model(t, 'TinyLLama-v0-Q4_0.gguf');
  if (!m) return;
  const r = await m.generate({ prompt: 'Once upon a time', max_tokens: 48, temperature: 0 }).result;
  t.comment(JSON.stringify(r.text));
  const words = r.text.split(/\s+/).filter(Boolean);
  t.ok(words.length >= 20, 'at least 20 words');
  const known = ['the', 'a', 'was', 'and', 'to', 'she', 'he', 'they', 'her', 'his', 'little', 'day'];
  const common = words.filter((w) => known.includes(w.toLowerCase().replace(/[^a-z]/g, ''))).length;
  t.ok(common >= 5, `ordinary English words (${common} of ${words.length})`);
  t.ok(/^[\x20-\x7e\n’“”]*$/.test(r.text), 'plain printable text');
});

t.test('the same seed and request give the same text; different seeds differ at temperature 1', async (t) => {
  const m = await model(t, 'stories260K.gguf');
  if (!m) return;
  const req = { prompt: 'Once upon a time', max_tokens: 40, temperature: 1, top_k: 0, top_p: 1, min_p: 0 };
  const a = await m.generate({ ...req, seed: 42 }).result;
  const b = await m.generate({ ...req, seed: 42 }).result;
  const c = await m.generate({ ...req, seed: 43 }).result;
  t.equal(a.text, b.text);
  t.not(a.text, c.text);
});

t.test('a stop string ends generation and is not emitted', async (t) => {
  const m = await model(t, 'stories260K.gguf');
  if (!m) return;
  const { chunks, result } = await collect(m, { prompt: 'Once upon a time', max_tokens: 60, temperature: 0, stop: ['Lily'] });
  t.equal(result.text, ', there was a little girl named ');
  t.equal(chunks.join(''), result.text);
  t.equal(result.finish_reason, 'stop');
  t.equal(result.stop, 'Lily');
  t.ok(result.usage.completion_tokens < 60);
  t.equal(m.decodeState().active, 0, 'the sequence was freed');
});

t.test('max_tokens ends with length', async (t) => {
  const m = await model(t, 'stories260K.gguf');
  if (!m) return;
  const r = await m.generate({ prompt: 'Once upon a time', max_tokens: 3, temperature: 0 }).result;
  t.equal(r.finish_reason, 'length');
  t.equal(r.usage.completion_tokens, 3);
});

t.test('an AbortSignal cancels at once and frees the sequence', async (t) => {
  const m = await model(t, 'TinyLLama-v0-Q4_0.gguf');
  if (!m) return;
  const ac = new AbortController();
  const gen = m.generate({ prompt: 'Once upon a time', max_tokens: 400, temperature: 0, signal: ac.signal });
  let chunks = 0;
  let abortedAt = 0;
  for await (const _ of gen) {
    if (++chunks === 5) {
      abortedAt = performance.now();
      ac.abort();
    }
  }
  const r = await gen.result;
  const ms = performance.now() - abortedAt;
  t.equal(r.finish_reason, 'cancelled');
  t.ok(r.usage.completion_tokens < 400, `stopped after ${r.usage.completion_tokens} tokens`);
  t.ok(ms < 500, `cancelled ${ms.toFixed(1)} ms after abort()`);
  t.same(m.decodeState(), { active: 0, queued: 0, max_sequences: 4 }, 'the loop holds no sequence');
  const next = await m.generate({ prompt: 'Once upon a time', max_tokens: 5, temperature: 0 }).result;
  t.equal(next.finish_reason, 'length', 'a later generation works');
  const pre = new AbortController();
  pre.abort();
  const never = await m.generate({ prompt: 'x', signal: pre.signal }).result;
  t.equal(never.finish_reason, 'cancelled', 'an already-aborted signal never starts');
});

t.test('breaking out of for-await cancels the generation', async (t) => {
  const m = await model(t, 'TinyLLama-v0-Q4_0.gguf');
  if (!m) return;
  const gen = m.generate({ prompt: 'Once upon a time', max_tokens: 400, temperature: 0 });
  for await (const _ of gen) break;
  const r = await gen.result;
  t.equal(r.finish_reason, 'cancelled');
  t.equal(m.decodeState().active, 0);
});

t.test('4 concurrent greedy generations equal the same run one at a time', async (t) => {
  const m = await model(t, 'TinyLLama-v0-Q4_0.gguf');
  if (!m) return;
  const prompts = ['Once upon a time', 'The little dog', 'Tom and Lily went to the park', 'One day, a bird'];
  const alone: GenerateResult[] = [];
  for (const p of prompts) alone.push(await m.generate({ prompt: p, max_tokens: 64, temperature: 0 }).result);
  const together = await Promise.all(prompts.map((p) => m.generate({ prompt: p, max_tokens: 64, temperature: 0 }).result));
  t.same(
    together.map((r) => r.text),
    alone.map((r) => r.text),
  );
  const rate = (rs: GenerateResult[]) => rs.reduce((s, r) => s + r.timings.decode_tokens_per_s, 0);
  t.comment(`decode tokens/s: 1 sequence ${(rate(alone) / alone.length).toFixed(1)}, 4 together ${rate(together).toFixed(1)} in all`);
});

t.test('more generations than maxSequences wait in the queue and all finish', async (t) => {
  const m = await model(t, 'stories260K.gguf');
  if (!m) return;
  const gens = Array.from({ length: 7 }, (_, i) => m.generate({ prompt: 'Once upon a time', max_tokens: 20, seed: i }));
  const state = m.decodeState();
  t.ok(state.active + state.queued <= 7 && state.active <= 4, JSON.stringify(state));
  const rs = await Promise.all(gens.map((g) => g.result));
  t.ok(rs.every((r) => r.finish_reason === 'length' || r.finish_reason === 'stop'));
  t.equal(m.decodeState().active, 0);
});

t.test('the event loop is never blocked during a long generation', async (t) => {
  const m = await model(t, 'TinyLLama-v0-Q4_0.gguf');
  if (!m) return;
  let last = performance.now();
  let worst = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last - 5);
    last = now;
  }, 5);
  const gens = [0, 1].map((seed) => m.generate({ prompt: 'Once upon a time', max_tokens: 300, temperature: 1, seed }));
  let chunks = 0;
  for await (const _ of gens[0]!) chunks++;
  await gens[1]!.result;
  clearInterval(timer);
  t.comment(`worst 5 ms timer lateness over ${chunks} chunks: ${worst.toFixed(2)} ms`);
  t.ok(worst < 50, `worst lateness ${worst.toFixed(2)} ms < 50 ms`);
});

t.test('chat messages go through the template and end at an end-of-generation token', async (t) => {
  const m = await model(t, 'TinyLLama-v0-Q4_0.gguf');
  if (!m) return;
  const r = await m.generate({ messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 30, temperature: 0 })
    .result;
  t.ok(r.usage.prompt_tokens > 5);
  t.notMatch(r.text, /<\|im_end\|>/, 'the end-of-turn marker is never part of the text');
  t.ok(['stop', 'length'].includes(r.finish_reason));
});

t.test('a prompt that does not fit the context is E_PROMPT_TOO_LONG with the numbers', async (t) => {
  const m = await model(t, 'stories260K.gguf');
  if (!m) return;
  throwsCode(t, () => m.generate({ prompt: 'Once upon a time', max_tokens: 510 }), 'E_PROMPT_TOO_LONG', /5 tokens/, /510/, /512/);
  throwsCode(t, () => m.generate({ prompt: 'a '.repeat(600) }), 'E_PROMPT_TOO_LONG', /context holds 512/);
});

t.test('bad parameters are E_BAD_REQUEST naming the field', async (t) => {
  const m = await model(t, 'stories260K.gguf');
  if (!m) return;
  const bad: Array<[unknown, RegExp]> = [
    [{ prompt: 'x', temperature: -1 }, /temperature/],
    [{ prompt: 'x', top_p: 0 }, /top_p/],
    [{ prompt: 'x', top_k: 1.5 }, /top_k/],
    [{ prompt: 'x', min_p: 2 }, /min_p/],
    [{ prompt: 'x', repeat_penalty: 0 }, /repeat_penalty/],
    [{ prompt: 'x', presence_penalty: 3 }, /presence_penalty/],
    [{ prompt: 'x', frequency_penalty: Number.NaN }, /frequency_penalty/],
    [{ prompt: 'x', seed: -1 }, /seed/],
    [{ prompt: 'x', max_tokens: 0 }, /max_tokens/],
    [{ prompt: 'x', stop: [''] }, /stop\[0\]/],
    [{ prompt: 'x', stop: 5 }, /stop/],
    [{ prompt: 'x', maxTokens: 5 }, /maxTokens/],
    [{ prompt: 5 }, /prompt/],
    [{}, /prompt.*messages/],
    [{ prompt: 'x', messages: [] }, /exactly one/],
    [{ messages: [{ role: 'user' }] }, /messages\[0\]\.content/],
    [{ prompt: 'x', signal: 'no' }, /signal/],
  ];
  for (const [req, re] of bad) throwsCode(t, () => m.generate(req as GenerateRequest), 'E_BAD_REQUEST', re);
});

t.test('close() cancels running generations and later calls fail with E_MODEL_CLOSED', async (t) => {
  const path = requireModel(t, 'stories260K.gguf');
  if (!path) return;
  const m = await loadModel(path, { threads: 1 });
  const gen = m.generate({ prompt: 'Once upon a time', max_tokens: 200 });
  m.close();
  const r = await gen.result;
  t.equal(r.finish_reason, 'cancelled');
  throwsCode(t, () => m.generate({ prompt: 'x' }), 'E_MODEL_CLOSED');
});

t.test('trace: true records each token’s step: when it was sampled and how many sequences the step advanced', async (t) => {
  const m = await model(t, 'stories260K.gguf');
  if (!m) return;
  // Three at once (submitted in one tick): their decode steps run together.
  const runs = await Promise.all(
    ['Once upon a time', 'The cat', 'A dog'].map((prompt) => collect(m, { prompt, max_tokens: 300, temperature: 0, trace: true })),
  );
  for (const { result } of runs) {
    const steps = result.steps!;
    t.ok(steps, 'the result has steps');
    // An end-of-generation token is counted in the usage but is not part of the text: it has no step.
    const eog = result.finish_reason === 'stop' && result.stop === undefined ? 1 : 0;
    t.equal(steps.at_ms.length, result.usage.completion_tokens - eog, 'one per token of the answer');
    t.equal(steps.batch.length, steps.at_ms.length);
    t.ok(steps.at_ms.every((ms, i) => ms > 0 && (i === 0 || ms >= steps.at_ms[i - 1]!)), 'times rise');
    t.ok(Math.abs(steps.at_ms[0]! - result.timings.ttft_ms) < 0.01, 'the first is the time to the first token');
    t.ok(steps.batch.every((n) => n >= 1 && n <= 4), 'batch sizes 1..maxSequences');
  }
  t.ok(runs.some((r) => r.result.steps!.batch.some((n) => n >= 2)), 'the generations shared steps');
  const plain = await collect(m, { prompt: 'Once upon a time', max_tokens: 4, temperature: 0 });
  t.notOk('steps' in plain.result, 'no steps unless asked');
});
