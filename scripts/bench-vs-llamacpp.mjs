// `npm run bench:vs-llamacpp`: edgellm against llama.cpp (node-llama-cpp, CPU build) on the same
// Q4_0 files, in one run on this machine: decode (tg, 128 tokens one at a time from an empty
// sequence) and prompt processing (pp, 512 tokens), each engine at its best of 1 and 2 threads.
// Also edgellm's effective decode bandwidth (weight bytes read per token x tokens/s) against the
// read bandwidth measured by the kernel benchmark in the same run.
//
// The models are written with the GGUF writer into a temp dir: random Q4_0 blocks (the values do
// not change the speed), a dense llama of ~120M weights read per token and a 32-expert top-4 MoE.
// Every measurement is the best of --reps runs (default 3): on a shared machine the slow runs are
// the ones another process got in the way of.
// Runs on the built package (npm run build). Options: --tokens N (tg), --prompt N (pp),
// --threads 1,2, --reps N, --keep (leave the temp dir), --json.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { DENSE, MOE, writeModel } from './lib/bench-models.mjs';
import { benchModel } from '../dist/engine/bench-model.js';
import { benchKernels, cpuInfo } from '../dist/index.js';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const GEN = Number(opt('--tokens', '128'));
const PROMPT = Number(opt('--prompt', '512'));
const THREADS = opt('--threads', '1,2').split(',').map(Number);
const REPS = Number(opt('--reps', '3'));
const KEEP = args.includes('--keep');
const JSON_OUT = args.includes('--json');

const MODELS = [DENSE, MOE];

const now = () => performance.now() / 1000;
const promptTokens = (n, nVocab) => Array.from({ length: n }, (_, i) => (i * 7919 + 1) % nVocab);

/**
 * llama.cpp through node-llama-cpp: pp = one evaluation of the prompt; tg = greedy decode from BOS
 * (node-llama-cpp adds ~0.5 ms per token of its own, measured on stories260K). Best of REPS.
 */
async function benchLlamaCpp(llama, path, threads, nVocab) {
  const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
  try {
    const ctx = await model.createContext({ contextSize: Math.max(PROMPT, GEN) + 64, batchSize: PROMPT, threads });
    try {
      const seq = ctx.getSequence();
      await seq.evaluateWithoutGeneratingNewTokens(promptTokens(8, nVocab)); // warm-up: first touch of the weights
      let pp = 0, tg = 0;
      for (let rep = 0; rep < REPS; rep++) {
        await seq.clearHistory();
        let t0 = now();
        await seq.evaluateWithoutGeneratingNewTokens(promptTokens(PROMPT, nVocab));
        pp = Math.max(pp, PROMPT / (now() - t0));
        await seq.clearHistory();
        let n = 0;
        t0 = now();
        for await (const _ of seq.evaluate([1], { temperature: 0 })) {
          if (++n >= GEN) break;
        }
        tg = Math.max(tg, GEN / (now() - t0));
      }
      return { pp_tps: pp, tg_tps: tg };
    } finally {
      await ctx.dispose();
    }
  } finally {
    await model.dispose();
  }
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-vs-llamacpp-'));
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const cpu = cpuInfo();
  const out = { cpu: `${cpu.model || cpu.arch}, ${cpu.physicalCores} cores, edgellm kernels ${cpu.kernels}`, prompt: PROMPT, gen: GEN, models: [] };
  try {
    const bw = await benchKernels({ threads: THREADS, shapes: [[4096, 4096]], minSeconds: 0.3 });
    const readBw = Math.max(...bw.filter((r) => r.name === 'read_bandwidth').map((r) => r.gbps));
    out.read_gbps = readBw;
    for (const s of MODELS) {
      const path = join(dir, s.name.replace(/[^a-z0-9]+/gi, '_') + '.gguf');
      const t0 = now();
      writeModel(s, path);
      process.stderr.write(`wrote ${path} in ${(now() - t0).toFixed(1)} s\n`);
      const ours = [], theirs = [];
      for (const threads of THREADS) {
        let best;
        for (let rep = 0; rep < REPS; rep++) {
          const r = await benchModel(path, { threads, promptTokens: PROMPT, genTokens: GEN });
          best = best ? { ...best, pp_tps: Math.max(best.pp_tps, r.pp_tps), ...(r.tg_tps > best.tg_tps ? { tg_tps: r.tg_tps, effective_gbps: r.effective_gbps } : {}) } : r;
        }
        ours.push(best);
        theirs.push({ threads, ...(await benchLlamaCpp(llama, path, threads, s.nVocab)) });
      }
      const best = (rows, key) => rows.reduce((a, r) => (r[key] > a[key] ? r : a));
      const e = { pp: best(ours, 'pp_tps'), tg: best(ours, 'tg_tps') };
      const l = { pp: best(theirs, 'pp_tps'), tg: best(theirs, 'tg_tps') };
      out.models.push({
        name: s.name,
        weight_bytes_per_token: e.tg.weight_bytes_per_token,
        edgellm: { pp_tps: e.pp.pp_tps, pp_threads: e.pp.threads, tg_tps: e.tg.tg_tps, tg_threads: e.tg.threads, effective_gbps: e.tg.effective_gbps },
        llamacpp: { pp_tps: l.pp.pp_tps, pp_threads: l.pp.threads, tg_tps: l.tg.tg_tps, tg_threads: l.tg.threads },
        tg_ratio: e.tg.tg_tps / l.tg.tg_tps,
        pp_ratio: e.pp.pp_tps / l.pp.pp_tps,
        all: { edgellm: ours.map(({ threads, pp_tps, tg_tps }) => ({ threads, pp_tps, tg_tps })), llamacpp: theirs },
      });
    }
  } finally {
    await llama.dispose();
    if (!KEEP) rmSync(dir, { recursive: true, force: true });
    else process.stderr.write(`kept ${dir}\n`);
  }
  if (JSON_OUT) {
    process.stdout.write(JSON.stringify(out) + '\n');
    return;
  }
  const f = (x, d = 1) => x.toFixed(d);
  const lines = [
    `cpu: ${out.cpu}; read bandwidth ${f(out.read_gbps, 2)} GB/s (best of ${THREADS.join(',')} threads)`,
    `each engine at its best of ${THREADS.join(' and ')} threads (threads in parentheses), best of ${REPS} runs`,
    '',
    'model                              test     edgellm t/s     llama.cpp t/s   ratio   edgellm GB/s (of read bw)',
  ];
  for (const m of out.models) {
    lines.push(
      `${m.name.padEnd(34)} ${('tg' + GEN).padEnd(6)} ${(f(m.edgellm.tg_tps) + ` (${m.edgellm.tg_threads})`).padStart(13)} ` +
        `${(f(m.llamacpp.tg_tps) + ` (${m.llamacpp.tg_threads})`).padStart(17)} ${f(m.tg_ratio, 2).padStart(7)}   ` +
        `${f(m.edgellm.effective_gbps, 2)} (${f((100 * m.edgellm.effective_gbps) / out.read_gbps, 0)}%)`,
    );
    lines.push(
      `${''.padEnd(34)} ${('pp' + PROMPT).padEnd(6)} ${(f(m.edgellm.pp_tps) + ` (${m.edgellm.pp_threads})`).padStart(13)} ` +
        `${(f(m.llamacpp.pp_tps) + ` (${m.llamacpp.pp_threads})`).padStart(17)} ${f(m.pp_ratio, 2).padStart(7)}`,
    );
  }
  lines.push('', `targets: tg ratio >= 1.15, pp ratio >= 1.00; ${(out.models[0].weight_bytes_per_token / 1e6).toFixed(1)} MB read per dense token`);
  if (out.models.some((m) => m.edgellm.effective_gbps > out.read_gbps)) {
    lines.push(
      'note: effective GB/s above the read bandwidth means the weights were served from the last-level cache ' +
        '(the read bandwidth is measured on >= 1 GiB); decode is then not DRAM-bound on this machine',
    );
  }
  process.stdout.write(lines.join('\n') + '\n');
}

main().catch((err) => {
  process.stderr.write(`bench-vs-llamacpp: ${err.stack ?? err}\n`);
  process.exit(1);
});
