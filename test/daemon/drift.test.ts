// The drift signal's rolling means (src/daemon/drift.ts): token-weighted, per model, over the last
// DRIFT_WINDOW measured requests; and the sampling draw.
import t from 'tap';
import { drawDriftSample, DriftWindows, DRIFT_WINDOW } from '../../src/daemon/drift.js';

const sums = (promptMean: number, promptTokens: number, completionMean = -1, completionTokens = 1) => ({
  prompt_sum: promptMean * promptTokens,
  prompt_tokens: promptTokens,
  completion_sum: completionMean * completionTokens,
  completion_tokens: completionTokens,
});

t.test('the means are per token, not per request', async (t) => {
  const d = new DriftWindows();
  d.add('m', sums(-1, 30));
  d.add('m', sums(-4, 10, -2, 3));
  t.same(d.means('prompt'), [['m', (-30 - 40) / 40]]);
  t.same(d.means('completion'), [['m', (-1 - 6) / 4]]);
});

t.test('models are kept apart, and a model without tokens has no gauge value', async (t) => {
  const d = new DriftWindows();
  d.add('a', sums(-2, 5));
  d.add('b', { prompt_sum: 0, prompt_tokens: 0, completion_sum: -3, completion_tokens: 3 });
  t.same(d.means('prompt'), [['a', -2]]);
  t.same(d.means('completion'), [['a', -1], ['b', -1]]);
  t.equal(d.samples('b'), 1);
});

t.test('only the last DRIFT_WINDOW requests count', async (t) => {
  const d = new DriftWindows();
  for (let i = 0; i < DRIFT_WINDOW; i++) d.add('m', sums(-9, 7));
  for (let i = 0; i < DRIFT_WINDOW; i++) d.add('m', sums(-1, 3));
  t.ok(Math.abs(d.means('prompt')[0]![1] - -1) < 1e-9, `the old requests left the window: ${d.means('prompt')[0]![1]}`);
  d.add('m', sums(-1 - DRIFT_WINDOW * 3, 1)); // replaces one -1 x 3 request
  const want = ((DRIFT_WINDOW - 1) * -3 + (-1 - DRIFT_WINDOW * 3)) / ((DRIFT_WINDOW - 1) * 3 + 1);
  t.ok(Math.abs(d.means('prompt')[0]![1] - want) < 1e-9);
  t.equal(d.samples('m'), 2 * DRIFT_WINDOW + 1, 'the counter counts every measured request');
});

t.test('the sample draw measures the configured fraction', async (t) => {
  t.notOk(drawDriftSample(0, () => 0), '0 = off, whatever the draw');
  t.ok(drawDriftSample(1, () => 0.999));
  t.ok(drawDriftSample(0.05, () => 0.04));
  t.notOk(drawDriftSample(0.05, () => 0.05));
});
