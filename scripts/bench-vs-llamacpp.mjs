// `npm run bench:vs-llamacpp`: edgellm against llama.cpp (node-llama-cpp, CPU build) on the same
// files, in one run on this machine: decode (tg, 128 tokens one at a time from an empty
// sequence) and prompt processing (pp, 512 tokens), each engine at its best of 1 and 2 threads.
// Also edgellm's effective decode bandwidth (weight bytes read per token x tokens/s) against the
// read bandwidth measured by the kernel benchmark in the same run.
//
// The models are written with the GGUF writer into a temp dir: a dense llama of ~120M weights
// read per token and a 32-expert top-4 MoE with random Q4_0 blocks (the values do not change the
// speed), and the same dense llama as llama.cpp's own quantizer writes it from random F16
// weights: its Q4_0 mix (Q6_K output) and Q4_K_M (Q4_K/Q6_K with Q5_0/Q8_0 where it must), the
// files users download; an OLMoE (64 experts, top 8) and a deepseek2 (multi-head latent attention,
// DeepSeek-V2-Lite's layout at half width) with random Q4_0 blocks. --models picks some: dense, moe,
// olmoe, dense-q4_0-mix, dense-q4_k_m, deepseek2.
// With EDGELLM_KERNELS=avx2, llama.cpp runs its AVX2 build (libggml-cpu-haswell.so) too, for a
// like-for-like comparison on CPUs without AVX-512; the table names both engines' kernels.
// Every measurement is the best of --reps runs (default 3): on a shared machine the slow runs are
// the ones another process got in the way of.
// Runs on the built package (npm run build). Options: --tokens N (tg), --prompt N (pp),
// --threads 1,2, --reps N, --models LIST, --keep (leave the temp dir), --json.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEEPSEEK2, DENSE, MOE, OLMOE, quantizeWithLlamaCpp, writeModel } from './lib/bench-models.mjs';
import { benchLlamaCppChild, haswellTree } from './lib/llamacpp-bench.mjs';
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

/** The benchmark models: how each file is made. */
const MODELS = [
  { id: 'dense', spec: DENSE, name: DENSE.name + ', random Q4_0' },
  { id: 'moe', spec: MOE, name: MOE.name + ', random Q4_0' },
  { id: 'olmoe', spec: OLMOE, name: OLMOE.name + ', random Q4_0' },
  { id: 'dense-q4_0-mix', spec: DENSE, name: DENSE.name + ', llama.cpp Q4_0 mix', ftype: 'Q4_0' },
  { id: 'dense-q4_k_m', spec: DENSE, name: DENSE.name + ', llama.cpp Q4_K_M', ftype: 'Q4_K_M' },
  { id: 'deepseek2', spec: DEEPSEEK2, name: DEEPSEEK2.name + ', random Q4_0' },
];
const PICKED = opt('--models', MODELS.map((m) => m.id).join(',')).split(',');
for (const id of PICKED) {
  if (!MODELS.some((m) => m.id === id)) throw new Error(`--models: unknown model "${id}" (known: ${MODELS.map((m) => m.id).join(', ')})`);
}

const now = () => performance.now() / 1000;

/** Writes the model's file into dir: random Q4_0 blocks, or random F16 through llama.cpp's quantizer. */
function makeModel(m, dir) {
  const path = join(dir, m.id + '.gguf');
  const t0 = now();
  if (m.ftype) {
    const f16 = join(dir, m.id + '-f16.gguf');
    writeModel(m.spec, f16, { type: 'F16' });
    quantizeWithLlamaCpp(f16, path, m.ftype);
    rmSync(f16);
  } else {
    writeModel(m.spec, path);
  }
  process.stderr.write(`wrote ${path} in ${(now() - t0).toFixed(1)} s\n`);
  return path;
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-vs-llamacpp-'));
  const cpu = cpuInfo();
  // AVX2 against AVX2: llama.cpp's haswell build when edgellm is held to its avx2 table.
  const tree = cpu.kernels === 'avx2' && process.arch === 'x64' ? haswellTree(join(dir, 'llamacpp-avx2')) : undefined;
  const out = { cpu: `${cpu.model || cpu.arch}, ${cpu.physicalCores} cores`, edgellm_kernels: cpu.kernels, llamacpp_backend: '', prompt: PROMPT, gen: GEN, models: [] };
  try {
    const bw = await benchKernels({ threads: THREADS, shapes: [[4096, 4096]], minSeconds: 0.3 });
    const readBw = Math.max(...bw.filter((r) => r.name === 'read_bandwidth').map((r) => r.gbps));
    out.read_gbps = readBw;
    for (const m of MODELS.filter((x) => PICKED.includes(x.id))) {
      const s = m.spec;
      const path = makeModel(m, dir);
      const ours = [], theirs = [];
      for (const threads of THREADS) {
        let best;
        for (let rep = 0; rep < REPS; rep++) {
          const r = await benchModel(path, { threads, promptTokens: PROMPT, genTokens: GEN });
          best = best ? { ...best, pp_tps: Math.max(best.pp_tps, r.pp_tps), ...(r.tg_tps > best.tg_tps ? { tg_tps: r.tg_tps, effective_gbps: r.effective_gbps } : {}) } : r;
        }
        ours.push(best);
        const r = benchLlamaCppChild({ path, threads, nVocab: s.nVocab, prompt: PROMPT, gen: GEN, reps: REPS, tree });
        out.llamacpp_backend = r.backend;
        theirs.push({ threads, pp_tps: r.pp_tps, tg_tps: r.tg_tps });
      }
      const best = (rows, key) => rows.reduce((a, r) => (r[key] > a[key] ? r : a));
      const e = { pp: best(ours, 'pp_tps'), tg: best(ours, 'tg_tps') };
      const l = { pp: best(theirs, 'pp_tps'), tg: best(theirs, 'tg_tps') };
      if (!KEEP) rmSync(path);
      out.models.push({
        name: m.name,
        weight_bytes_per_token: e.tg.weight_bytes_per_token,
        edgellm: { pp_tps: e.pp.pp_tps, pp_threads: e.pp.threads, tg_tps: e.tg.tg_tps, tg_threads: e.tg.threads, effective_gbps: e.tg.effective_gbps },
        llamacpp: { pp_tps: l.pp.pp_tps, pp_threads: l.pp.threads, tg_tps: l.tg.tg_tps, tg_threads: l.tg.threads },
        tg_ratio: e.tg.tg_tps / l.tg.tg_tps,
        pp_ratio: e.pp.pp_tps / l.pp.pp_tps,
        all: { edgellm: ours.map(({ threads, pp_tps, tg_tps }) => ({ threads, pp_tps, tg_tps })), llamacpp: theirs },
      });
    }
  } finally {
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
    `kernels: edgellm ${out.edgellm_kernels}, llama.cpp ${out.llamacpp_backend || '?'}`,
    `each engine at its best of ${THREADS.join(' and ')} threads (threads in parentheses), best of ${REPS} runs`,
    '',
    'model                                            test     edgellm t/s     llama.cpp t/s   ratio   edgellm GB/s (of read bw)',
  ];
  for (const m of out.models) {
    lines.push(
      `${m.name.padEnd(48)} ${('tg' + GEN).padEnd(6)} ${(f(m.edgellm.tg_tps) + ` (${m.edgellm.tg_threads})`).padStart(13)} ` +
        `${(f(m.llamacpp.tg_tps) + ` (${m.llamacpp.tg_threads})`).padStart(17)} ${f(m.tg_ratio, 2).padStart(7)}   ` +
        `${f(m.edgellm.effective_gbps, 2)} (${f((100 * m.edgellm.effective_gbps) / out.read_gbps, 0)}%)`,
    );
    lines.push(
      `${''.padEnd(48)} ${('pp' + PROMPT).padEnd(6)} ${(f(m.edgellm.pp_tps) + ` (${m.edgellm.pp_threads})`).padStart(13)} ` +
        `${(f(m.llamacpp.pp_tps) + ` (${m.llamacpp.pp_threads})`).padStart(17)} ${f(m.pp_ratio, 2).padStart(7)}`,
    );
  }
  lines.push('', 'targets: tg ratio >= 1.15, pp ratio >= 1.00');
  for (const m of out.models) lines.push(`  ${m.name}: ${(m.weight_bytes_per_token / 1e6).toFixed(1)} MB read per token`);
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
