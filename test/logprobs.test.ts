// Log-probabilities of generated tokens (engine/logprobs.ts) on stories260K (../shared/models):
// greedy decoding reports exactly the log-softmax `edgellm logits` computes (the addon's
// evalLogits), sampled decoding the distribution drawn from, and bad values are refused.
import t from 'tap';
import { EdgeError } from '../src/errors.js';
import { loadModel, logSoftmax, type Model } from '../src/engine/model.js';
import { requireModel, type TapTest } from './fixtures/paths.js';

let loaded: Model | undefined;
async function model(t: TapTest): Promise<Model | undefined> {
  const path = requireModel(t, 'stories260K.gguf', 'stories260K logprobs');
  if (!path) return undefined;
  loaded ??= await loadModel(path, { threads: 2, contextSize: 256, maxSequences: 4 });
  return loaded;
}
t.teardown(() => loaded?.close());

/** Ids of the k largest values, ties by lower id. */
function topIds(lp: Float64Array, k: number): number[] {
  return Array.from(lp.keys())
    .sort((a, b) => lp[b]! - lp[a]! || a - b)
    .slice(0, k);
}

t.test('greedy logprobs and top_logprobs equal the log-softmax of evalLogits at every position', async (t) => {
  const m = await model(t);
  if (!m) return;
  const prompt = 'Once upon a time';
  const result = await m.generate({ prompt, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 5 }).result;
  const content = result.logprobs?.content ?? [];
  t.equal(content.length, 12, 'one entry per generated token');
  const promptIds = m.tokenizer.encode(prompt);
  const ids = [...promptIds, ...content.map((c) => c.id)];
  const logits = await m.evalLogits(Int32Array.from(ids), { allPositions: true });
  const V = m.info().n_vocab;
  let worst = 0;
  content.forEach((c, i) => {
    const pos = promptIds.length - 1 + i; // the position whose logits chose token i
    const lp = logSoftmax(logits.subarray(pos * V, (pos + 1) * V));
    worst = Math.max(worst, Math.abs(c.logprob - lp[c.id]!));
    t.same(
      c.top_logprobs.map((a) => a.id),
      topIds(lp, 5),
      `token ${i}: the alternatives are the 5 most probable`,
    );
    t.equal(c.top_logprobs[0]!.id, c.id, 'greedy: the token is the most probable');
    for (const a of c.top_logprobs) worst = Math.max(worst, Math.abs(a.logprob - lp[a.id]!));
    t.same(c.bytes, Array.from(m.tokenizer.pieceBytes(c.id)));
    t.equal(c.token, new TextDecoder().decode(m.tokenizer.pieceBytes(c.id)));
  });
  t.ok(worst < 1e-4, `largest difference from evalLogits ${worst.toExponential(2)} < 1e-4`);
  t.equal(content.map((c) => c.token).join(''), result.text, 'the tokens spell the text');
});

t.test('sampled logprobs are of the filtered distribution: at most top_k entries that sum to <= 1', async (t) => {
  const m = await model(t);
  if (!m) return;
  const result = await m.generate({
    prompt: 'Once upon a time',
    max_tokens: 16,
    temperature: 0.7,
    top_k: 3,
    top_p: 1,
    min_p: 0,
    seed: 11,
    logprobs: true,
    top_logprobs: 20,
  }).result;
  for (const c of result.logprobs!.content) {
    t.ok(c.top_logprobs.length <= 3, 'never more than the filters kept');
    const mass = c.top_logprobs.reduce((s, a) => s + Math.exp(a.logprob), 0);
    t.ok(Math.abs(mass - 1) < 1e-4, `top-k 3 keeps all the mass: ${mass}`);
    const self = c.top_logprobs.find((a) => a.id === c.id);
    t.ok(self && Math.abs(self.logprob - c.logprob) < 1e-6, 'the drawn token is among them with its own logprob');
  }
});

t.test('raw_logprobs sums the model log-probabilities of the prompt given its prefix', async (t) => {
  const m = await model(t);
  if (!m) return;
  const prompt = 'Once upon a time there was a little girl who liked to play in the park with her dog';
  const result = await m.generate({ prompt, max_tokens: 4, temperature: 0, logprobs: true, raw_logprobs: true }).result;
  const ids = m.tokenizer.encode(prompt);
  const logits = await m.evalLogits(Int32Array.from(ids), { allPositions: true });
  const V = m.info().n_vocab;
  let sum = 0;
  for (let p = 0; p + 1 < ids.length; p++) sum += logSoftmax(logits.subarray(p * V, (p + 1) * V))[ids[p + 1]!]!;
  const raw = result.raw_logprobs!;
  t.equal(raw.prompt_tokens, ids.length - 1);
  t.ok(Math.abs(raw.prompt_sum - sum) < 1e-3, `${raw.prompt_sum} ~ ${sum}`);
  const generated = result.logprobs!.content.reduce((s, c) => s + c.logprob, 0);
  t.equal(raw.completion_tokens, 4);
  t.ok(Math.abs(raw.completion_sum - generated) < 1e-4, 'greedy without penalties: the same log-probabilities');
});

t.test('a generation without logprobs has none in its result', async (t) => {
  const m = await model(t);
  if (!m) return;
  const result = await m.generate({ prompt: 'Once', max_tokens: 3, temperature: 0 }).result;
  t.equal(result.logprobs, undefined);
  t.equal(result.raw_logprobs, undefined);
});

t.test('bad logprobs values are refused with E_BAD_LOGPROBS', async (t) => {
  const m = await model(t);
  if (!m) return;
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ logprobs: true, top_logprobs: 21 }, /top_logprobs must be a whole number from 0 to 20, got 21/],
    [{ logprobs: true, top_logprobs: -1 }, /from 0 to 20, got -1/],
    [{ logprobs: true, top_logprobs: 2.5 }, /from 0 to 20, got 2.5/],
    [{ top_logprobs: 3 }, /top_logprobs needs logprobs: true/],
    [{ logprobs: 'yes' }, /logprobs must be true or false/],
  ];
  for (const [fields, message] of cases) {
    try {
      m.generate({ prompt: 'Once', max_tokens: 2, ...fields });
      t.fail(`accepted ${JSON.stringify(fields)}`);
    } catch (err) {
      t.ok(err instanceof EdgeError);
      t.equal((err as EdgeError).code, 'E_BAD_LOGPROBS', JSON.stringify(fields));
      t.match((err as Error).message, message);
    }
  }
});
