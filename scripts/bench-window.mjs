// `npm run bench:window`: what the batching window (batch.window_ms, issue #17) does to a burst.
// --requests requests (default 32) arrive uniformly over --spread ms (default 500) at the daemon's
// admission queue (RequestQueue, the one run-local submits to; batch.max = --requests slots), once
// per window in --windows (default 0,50,500 ms). Each queued job runs the engine's generate() as
// run-local does; the native decode loop batches whatever is active. Printed per window: time to
// first token from the request's arrival (so a held request pays its wait), p50 and p95 over every
// request of every rep, and the aggregate generated tokens/s (all tokens over the time from the first
// arrival to the last completion, best of --reps) with the CPU time per token (every thread of the
// process, best of --reps: steadier than wall time on a shared machine). Windows are taken in turns within each rep, so a
// slow spell of a shared machine lands on every window alike.
//
// The model is the dense random Q4_0 llama of bench:batching, or --model FILE. Every generation
// decodes --tokens tokens (default 16, greedy; the count is checked). Runs on the built package
// (npm run build). Options: --model FILE, --threads N, --tokens N, --requests N, --spread MS,
// --windows LIST, --reps N (default 3), --json.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DENSE, writeModel } from './lib/bench-models.mjs';
import { loadModel, cpuInfo } from '../dist/index.js';
import { RequestQueue } from '../dist/scheduler/request-queue.js';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const MODEL = opt('--model', '');
const THREADS = opt('--threads', '') ? Number(opt('--threads', '')) : undefined;
const TOKENS = Number(opt('--tokens', '16'));
const REQUESTS = Number(opt('--requests', '32'));
const SPREAD_MS = Number(opt('--spread', '500'));
const WINDOWS = opt('--windows', '0,50,500').split(',').map(Number);
const REPS = Number(opt('--reps', '3'));
const JSON_OUT = args.includes('--json');
if (!(REQUESTS >= 1 && REQUESTS <= 64)) throw new Error(`--requests takes 1 to 64 (batch.max's range), got ${REQUESTS}`);

const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};

/** One burst through a queue with `windowMs`: per-request time to first token (ms), and the aggregate tokens/s. */
async function burst(model, windowMs, rep) {
  const queue = new RequestQueue({ slots: REQUESTS, maxWaiting: REQUESTS, windowMs });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const done = [];
  for (let i = 0; i < REQUESTS; i++) {
    await sleep(t0 + (i * SPREAD_MS) / REQUESTS - performance.now());
    const arrived = performance.now();
    done.push(
      new Promise((resolve, reject) => {
        queue.submit({
          key: String(i),
          priority: 5,
          deadlineAt: null,
          expire: () => reject(new Error('no deadline was set, yet a request expired')),
          run: async () => {
            try {
              // A distinct short prompt per request (and per rep), as bench:batching.
              const g = model.generate({ prompt: `t${300 + 37 * i + rep} t${1000 + 11 * i} t${5000 + rep}`, max_tokens: TOKENS, temperature: 0 });
              let first;
              for await (const _ of g) first ??= performance.now();
              const r = await g.result;
              if (r.usage.completion_tokens < TOKENS) throw new Error(`a generation stopped early (${r.finish_reason}); the rate would not compare`);
              resolve({ ttft: first - arrived, tokens: r.usage.completion_tokens, end: performance.now() });
            } catch (err) {
              reject(err);
            }
          },
        });
      }),
    );
  }
  const runs = await Promise.all(done);
  const wall = (Math.max(...runs.map((r) => r.end)) - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const tokens = runs.reduce((s, r) => s + r.tokens, 0);
  return { ttft: runs.map((r) => r.ttft), tps: tokens / wall, cpu_ms_per_token: (cpu.user + cpu.system) / 1000 / tokens };
}

async function main() {
  const dir = MODEL ? '' : mkdtempSync(join(tmpdir(), 'edgellm-window-'));
  try {
    let path = MODEL;
    if (!path) {
      path = join(dir, 'dense.gguf');
      writeModel(DENSE, path);
    }
    // The daemon's load options for batch.max = REQUESTS (the engine's default batchSize, 64, bounds it).
    const model = await loadModel(path, { threads: THREADS, maxSequences: REQUESTS, contextSize: TOKENS + 64 });
    try {
      const info = cpuInfo();
      await burst(model, 0, -1); // warm-up: first touch of the weights, every KV cache allocated once
      const all = new Map(WINDOWS.map((w) => [w, { ttft: [], tps: 0, cpu: Infinity }]));
      for (let rep = 0; rep < REPS; rep++) {
        for (const w of WINDOWS) {
          const r = await burst(model, w, rep);
          const a = all.get(w);
          a.ttft.push(...r.ttft);
          a.tps = Math.max(a.tps, r.tps);
          a.cpu = Math.min(a.cpu, r.cpu_ms_per_token);
        }
      }
      const rows = WINDOWS.map((w) => {
        const a = all.get(w);
        return { window_ms: w, ttft_p50_ms: pct(a.ttft, 50), ttft_p95_ms: pct(a.ttft, 95), tps: a.tps, cpu_ms_per_token: a.cpu };
      });
      const out = {
        cpu: `${info.model || info.arch}, ${info.physicalCores} cores, kernels ${info.kernels}`,
        model: MODEL || `${DENSE.name}, random Q4_0`,
        threads: THREADS ?? info.defaultThreads,
        requests: REQUESTS,
        spread_ms: SPREAD_MS,
        tokens_per_generation: TOKENS,
        reps: REPS,
        rows,
      };
      if (JSON_OUT) {
        process.stdout.write(JSON.stringify(out) + '\n');
        return;
      }
      const f = (x, d = 0) => x.toFixed(d);
      process.stdout.write(
        [
          `cpu: ${out.cpu}; model: ${out.model}; ${out.threads} thread(s)`,
          `${REQUESTS} requests arriving over ${SPREAD_MS} ms, ${TOKENS} tokens each, batch.max ${REQUESTS}; TTFT over all ${REPS} reps, tokens/s best of ${REPS}`,
          '',
          'window ms   TTFT p50 ms   TTFT p95 ms   aggregate t/s   CPU ms/token',
          ...rows.map(
            (r) =>
              `${String(r.window_ms).padStart(9)}   ${f(r.ttft_p50_ms).padStart(11)}   ${f(r.ttft_p95_ms).padStart(11)}   ${f(r.tps, 1).padStart(13)}   ${f(r.cpu_ms_per_token, 2).padStart(12)}`,
          ),
        ].join('\n') + '\n',
      );
    } finally {
      await model.close();
    }
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench-window: ${err.stack ?? err}\n`);
  process.exit(1);
});
