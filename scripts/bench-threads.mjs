// Decode speed against the daemon's event loop, by thread count (issue #18 item 5): does a pool
// that takes every usable CPU (the decode thread + its workers) lose to one that leaves a CPU to
// the event loop, and does the loop stay responsive while a generation decodes?
//
// Each case is a fresh Node process that loads the model with `threads`, then generates --tokens
// tokens (the native decode loop on its own thread posts them to JS, as in the daemon) while the
// event loop is idle or busy. Busy = what a serving daemon's loop does beside a generation, made
// steady: every millisecond a batch of MQTT-like messages is parsed, answered and serialized
// (about --work-us microseconds of JS per tick, a few tens of percent of one core). Printed per case:
// decode tokens/s (best of --runs), the event loop's delay p50/p99 (perf_hooks, the time a ready
// callback waited) and the loop's completed ticks per second.
//
// On a 4-core Pi the question is 4 threads vs 3; on the 2-core machines we have, the analogous
// one is 2 threads (the pool takes both CPUs) vs 1 (one CPU left to the loop). EDGELLM_SPIN_US is
// varied too: 50 (the default) and 0 (workers and the waiting decode thread sleep at once).
// Runs on the built package. Usage: node scripts/bench-threads.mjs [--json] [--tokens N] [--runs N]
//   [--threads 1,2] [--spin 50,0] [--model FILE] (default: the random dense Q4_0 llama of the speed
//   benchmarks, written to a temp dir)
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const TOKENS = Number(opt('--tokens', '48'));
const WORK_US = Number(opt('--work-us', '300'));

// One MQTT-like batch: 20 messages parsed, answered, serialized (a few hundred microseconds).
function loopWork(deadlineUs) {
  const t0 = process.hrtime.bigint();
  let n = 0;
  while (Number(process.hrtime.bigint() - t0) / 1000 < deadlineUs) {
    const msgs = Array.from({ length: 20 }, (_, i) => JSON.stringify({ id: `req-${n}-${i}`, prompt: 'x'.repeat(200), max_tokens: 16 }));
    const replies = msgs.map((m) => JSON.parse(m)).map((r) => ({ id: r.id, queued: true, at: Date.now() }));
    n += JSON.stringify(replies).length > 0 ? 1 : 0;
  }
  return n;
}

if (args[0] === '--child') {
  const [, path, threads, load] = args;
  const { loadModel } = await import(join(root, 'dist/engine/model.js'));
  const model = await loadModel(path, { threads: Number(threads), contextSize: 512 });
  const delay = monitorEventLoopDelay({ resolution: 1 });
  let ticks = 0;
  let timer;
  if (load === 'busy') {
    timer = setInterval(() => {
      loopWork(WORK_US);
      ticks++;
    }, 1);
  }
  // A short warm-up generation (pages in the weights, wakes the pool), then the measured one.
  await model.generate({ prompt: 'Once upon a time', max_tokens: 4, temperature: 0 }).result;
  delay.enable();
  const t0 = performance.now();
  const r = await model.generate({ prompt: 'Once upon a time', max_tokens: TOKENS, temperature: 0 }).result;
  const wallS = (performance.now() - t0) / 1000;
  delay.disable();
  if (timer) clearInterval(timer);
  model.close();
  console.log(JSON.stringify({
    tps: r.timings.decode_tokens_per_s, tokens: r.usage.completion_tokens,
    delay_p50_ms: delay.percentile(50) / 1e6, delay_p99_ms: delay.percentile(99) / 1e6, ticks_per_s: ticks / wallS,
  }));
  process.exit(0);
}

const JSON_OUT = args.includes('--json');
const RUNS = Number(opt('--runs', '3'));
const cpus = availableParallelism();
const THREADS = opt('--threads', `${Math.max(1, cpus - 1)},${cpus}`).split(',').map(Number);
const SPINS = opt('--spin', '50,0').split(',').map(Number);
const dir = mkdtempSync(join(tmpdir(), 'edgellm-bench-threads-'));
const rows = [];
try {
  let model = opt('--model', null);
  if (!model) {
    const { DENSE, writeModel } = await import('./lib/bench-models.mjs');
    model = join(dir, 'dense.gguf');
    writeModel(DENSE, model);
  }
  const cases = [];
  for (const load of ['idle', 'busy'])
    for (const threads of THREADS)
      for (const spin of SPINS) cases.push({ load, threads, spin, runs: [] });
  // Interleaved rounds so that a burst of other work on the machine hits every case alike.
  for (let round = 0; round < RUNS; round++) {
    for (const c of cases) {
      const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', model, String(c.threads), c.load, '--tokens', String(TOKENS), '--work-us', String(WORK_US)], {
        encoding: 'utf8', env: { ...process.env, EDGELLM_SPIN_US: String(c.spin) },
      });
      if (r.status !== 0) throw new Error(`threads ${c.threads} spin ${c.spin} ${c.load}: child failed (${r.status}): ${r.stderr}`);
      c.runs.push(JSON.parse(r.stdout.trim().split('\n').pop()));
    }
  }
  for (const c of cases) {
    const best = c.runs.reduce((a, b) => (b.tps > a.tps ? b : a));
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    rows.push({
      load: c.load, threads: c.threads, usable_cpus: cpus, spin_us: c.spin,
      decode_tps_best: +best.tps.toFixed(2), decode_tps_median: +median(c.runs.map((r) => r.tps)).toFixed(2),
      loop_delay_p50_ms: +median(c.runs.map((r) => r.delay_p50_ms)).toFixed(2),
      loop_delay_p99_ms: +median(c.runs.map((r) => r.delay_p99_ms)).toFixed(2),
      loop_ticks_per_s: +median(c.runs.map((r) => r.ticks_per_s)).toFixed(0), runs: RUNS,
    });
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
if (JSON_OUT) {
  console.log(JSON.stringify({ tokens: TOKENS, work_us: WORK_US, rows }, null, 2));
} else {
  console.log(`Decode of ${TOKENS} tokens beside the event loop (${cpus} usable CPUs; busy loop: ${WORK_US} us of JSON work every 1 ms); best / median of ${RUNS}`);
  console.log('| loop | threads | EDGELLM_SPIN_US | decode tok/s best | median | loop delay p50 ms | p99 ms | loop ticks/s |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(`| ${r.load} | ${r.threads} | ${r.spin_us} | ${r.decode_tps_best} | ${r.decode_tps_median} | ${r.loop_delay_p50_ms} | ${r.loop_delay_p99_ms} | ${r.loop_ticks_per_s} |`);
  }
}
