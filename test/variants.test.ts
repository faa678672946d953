// A/B variants (issue #17): the sticky choice by hash of (device, name) splits 2,000 simulated devices
// within 2% of the weights, keeps each device on its variant, takes a request's override and refuses an
// unknown one; the config's variants key is validated with errors that name the key; the per-variant
// summary of audit records (ab-report, `edgellm audit --by variant`) counts what it should.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config.js';
import { EdgeError } from '../src/errors.js';
import type { RequestAudit } from '../src/policy/audit.js';
import { chooseVariant, stickyPoint, summarizeVariants, type Variant } from '../src/policy/variants.js';

const DEVICES = Array.from({ length: 2000 }, (_, i) => `line-${i}`);

function shares(variants: Variant[], name: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const d of DEVICES) {
    const v = chooseVariant(variants, d, name).model;
    counts.set(v, (counts.get(v) ?? 0) + 1);
  }
  return new Map([...counts].map(([k, n]) => [k, n / DEVICES.length]));
}

t.test('the split over 2,000 devices is within 2% of the normalized weights', async (t) => {
  const cases: Array<[string, Variant[]]> = [
    ['chat', [{ model: 'small', weight: 1 }, { model: 'large', weight: 1 }]],
    ['chat', [{ model: 'small', weight: 90 }, { model: 'large', weight: 10 }]],
    ['summarize', [{ model: 'a', weight: 0.5 }, { model: 'b', weight: 0.3 }, { model: 'c', weight: 0.2 }]],
  ];
  for (const [name, variants] of cases) {
    const total = variants.reduce((s, v) => s + v.weight, 0);
    const got = shares(variants, name);
    for (const v of variants) {
      const share = got.get(v.model) ?? 0;
      t.ok(Math.abs(share - v.weight / total) <= 0.02, `${name} ${v.model}: ${(100 * share).toFixed(1)}% of devices, weight ${((100 * v.weight) / total).toFixed(1)}%`);
    }
  }
});

t.test('sticky: a device keeps its variant; the hash is salted by the model name', async (t) => {
  const variants = [{ model: 'small', weight: 1 }, { model: 'large', weight: 1 }];
  for (const d of DEVICES.slice(0, 50)) {
    const first = chooseVariant(variants, d, 'chat').model;
    for (let i = 0; i < 3; i++) t.equal(chooseVariant(variants, d, 'chat').model, first);
  }
  // A restart changes nothing: the point is a pure function of the ids (a fixed value, computed once by hand: sha256).
  t.equal(stickyPoint('line-0', 'chat'), stickyPoint('line-0', 'chat'));
  t.ok(stickyPoint('line-0', 'chat') >= 0 && stickyPoint('line-0', 'chat') < 1);
  t.not(stickyPoint('line-0', 'chat'), stickyPoint('line-0', 'summarize'), 'another A/B name draws another point');
  // Independent names: about half the devices on "small" for chat are on "small" for summarize too.
  const both = DEVICES.filter((d) => chooseVariant(variants, d, 'chat').model === 'small' && chooseVariant(variants, d, 'summarize').model === 'small').length;
  t.ok(Math.abs(both / DEVICES.length - 0.25) <= 0.02, `${both} of 2000 devices on small for both names (~25%)`);
});

t.test('a request may name its variant; an unknown one is E_UNKNOWN_VARIANT listing the variants', async (t) => {
  const variants = [{ model: 'small', weight: 1 }, { model: 'large', weight: 1e-9 }];
  t.equal(chooseVariant(variants, 'line-1', 'chat', 'large').model, 'large');
  t.equal(chooseVariant(variants, 'line-1', 'chat', 'small').model, 'small');
  t.throws(() => chooseVariant(variants, 'line-1', 'chat', 'medium'), { code: 'E_UNKNOWN_VARIANT', message: /"medium" is not a variant of "chat"; its variants are small, large/ });
});

t.test('config: variants validated, each error names the key', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-variants-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const load = (variants: unknown) => {
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ model: '/m/small.gguf', models: ['/m/large.gguf'], variants }));
    return loadConfig({ file, env: {} });
  };
  const ok = load({ chat: [{ model: 'small', weight: 3 }, { model: 'large', weight: 1 }] });
  t.same(ok.variants.chat, [{ model: 'small', weight: 3 }, { model: 'large', weight: 1 }]);
  const bad: Array<[unknown, RegExp]> = [
    [{ chat: [{ model: 'small', weight: 0 }] }, /variants\.chat\[0\]\.weight.*must be a number > 0/],
    [{ chat: [{ model: 'small', weight: -1 }] }, /variants\.chat\[0\]\.weight.*must be a number > 0/],
    [{ chat: [{ model: 'small' }] }, /variants\.chat\[0\]\.weight/],
    [{ chat: [] }, /variants\.chat.*at least one variant/],
    [{ chat: [{ model: 'small', weight: 1, share: 2 }] }, /variants\.chat\[0\].*share/],
    [{ chat: [{ model: 'medium', weight: 1 }] }, /variants\.chat\[0\]\.model: "medium" is not a model of this node \(small, large\)/],
    [{ chat: [{ model: 'small', weight: 1 }, { model: 'small', weight: 1 }] }, /variants\.chat\[1\]\.model: "small" is listed twice/],
    [{ small: [{ model: 'large', weight: 1 }] }, /variants\.small: "small" is already a model or class name/],
    [{ chat: 'small' }, /variants\.chat.*list of \{model, weight\}/],
  ];
  for (const [variants, re] of bad) {
    let err: unknown;
    try {
      load(variants);
    } catch (e) {
      err = e;
    }
    t.ok(err instanceof EdgeError && err.code === 'E_CONFIG', `${JSON.stringify(variants)}: E_CONFIG`);
    t.match((err as Error | undefined)?.message, re);
  }
});

t.test('summarizeVariants: counts, error and cache hit rates, mean tokens/s, p95 latency per variant', async (t) => {
  const rec = (variant: string | undefined, over: Partial<RequestAudit>): RequestAudit => ({
    type: 'request', time: 1, device: 'd', id: 'x', allowed: true, outcome: 'ok',
    ...(variant !== undefined ? { variant, variant_of: 'chat' } : {}), ...over,
  });
  const records: RequestAudit[] = [
    ...Array.from({ length: 20 }, (_, i) => rec('small', { total_ms: (i + 1) * 10, tokens_per_s: 10 })),
    rec('small', { outcome: 'error', error: { code: 'E_ENGINE', message: 'x' }, total_ms: 5 }),
    rec('small', { outcome: 'ok', cached: true, tokens_per_s: 0, total_ms: 1 }),
    rec('large', { total_ms: 100, tokens_per_s: 4 }),
    rec('large', { total_ms: 300, tokens_per_s: 6 }),
    rec('large', { outcome: 'denied', allowed: false }),
    rec(undefined, { total_ms: 1, tokens_per_s: 99 }),
  ];
  const [small, large, ...rest] = summarizeVariants(records);
  t.equal(rest.length, 0, 'records without a variant are left out');
  t.match(small, { name: 'chat', variant: 'small', requests: 22, error_rate: 1 / 22, cache_hit_rate: 1 / 21, mean_tokens_per_s: 10 });
  // Latencies of 21 answered: 1, 10..200; nearest rank 95% of 21 = the 20th = 190.
  t.equal(small!.p95_latency_ms, 190);
  t.match(large, { variant: 'large', requests: 3, error_rate: 1 / 3, cache_hit_rate: 0, mean_tokens_per_s: 5, p95_latency_ms: 300 });
});
