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
import { randomFillSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { GgufWriter, meta } from '../dist/engine/gguf-writer.js';
import { f32ToF16 } from '../dist/engine/quant.js';
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

const MODELS = [
  // ~122M weights read per token: 8 x (q, o 1024x1024; k, v 256x1024; 3 x 2816x1024) + 32000x1024.
  { name: 'dense 1024x8, ffn 2816', arch: 'llama', nEmbd: 1024, nLayer: 8, nHead: 16, nHeadKv: 4, nFf: 2816, nVocab: 32000 },
  // 32 experts of 512 per layer, 4 used per token: ~26M of ~214M weights read per token.
  { name: 'MoE 32x4, 1024x4, expert ffn 512', arch: 'llama', nEmbd: 1024, nLayer: 4, nHead: 16, nHeadKv: 4, nFf: 512, nVocab: 32000, nExpert: 32, nExpertUsed: 4 },
];

/** Random Q4_0 blocks of n weights with standard deviation ~std: a scale, then 16 bytes of nibbles. */
function randomQ4_0(n, std) {
  const blocks = n / 32;
  const out = new Uint8Array(blocks * 18);
  randomFillSync(out);
  const d = f32ToF16(std / 4.6); // nibbles uniform on -8..7 have a standard deviation of ~4.6
  for (let b = 0; b < blocks; b++) {
    out[b * 18] = d & 0xff;
    out[b * 18 + 1] = d >> 8;
  }
  return out;
}

/** A SentencePiece vocabulary llama.cpp accepts: specials, the 256 byte tokens, made-up pieces. */
function setVocab(g, nVocab) {
  const hex = (i) => i.toString(16).toUpperCase().padStart(2, '0');
  const tokens = Array.from({ length: nVocab }, (_, i) => (i < 3 ? ['<unk>', '<s>', '</s>'][i] : i < 259 ? `<0x${hex(i - 3)}>` : `t${i}`));
  g.setMeta('tokenizer.ggml.model', meta.string('llama'));
  g.setMeta('tokenizer.ggml.tokens', meta.array('string', tokens));
  g.setMeta('tokenizer.ggml.scores', meta.array('float32', tokens.map((_, i) => -i)));
  g.setMeta('tokenizer.ggml.token_type', meta.array('int32', tokens.map((_, i) => (i === 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1))));
  g.setMeta('tokenizer.ggml.bos_token_id', meta.uint32(1));
  g.setMeta('tokenizer.ggml.eos_token_id', meta.uint32(2));
}

function writeModel(s, path) {
  const g = new GgufWriter();
  const p = s.arch + '.';
  g.setMeta('general.architecture', meta.string(s.arch));
  g.setMeta(p + 'context_length', meta.uint32(4096));
  g.setMeta(p + 'embedding_length', meta.uint32(s.nEmbd));
  g.setMeta(p + 'block_count', meta.uint32(s.nLayer));
  g.setMeta(p + 'feed_forward_length', meta.uint32(s.nFf));
  g.setMeta(p + 'attention.head_count', meta.uint32(s.nHead));
  g.setMeta(p + 'attention.head_count_kv', meta.uint32(s.nHeadKv));
  g.setMeta(p + 'attention.layer_norm_rms_epsilon', meta.float32(1e-5));
  if (s.nExpert) {
    g.setMeta(p + 'expert_count', meta.uint32(s.nExpert));
    g.setMeta(p + 'expert_used_count', meta.uint32(s.nExpertUsed));
  }
  setVocab(g, s.nVocab);
  const D = s.nEmbd, kd = (D / s.nHead) * s.nHeadKv;
  const q4 = (name, shape) => {
    const n = shape.reduce((a, b) => a * b, 1);
    g.addTensor({ name, type: 'Q4_0', shape, data: () => randomQ4_0(n, 1 / Math.sqrt(shape[0])) });
  };
  const ones = (name) => g.addTensor({ name, type: 'F32', shape: [D], data: () => new Float32Array(D).fill(1) });
  q4('token_embd.weight', [D, s.nVocab]);
  ones('output_norm.weight');
  q4('output.weight', [D, s.nVocab]);
  for (let l = 0; l < s.nLayer; l++) {
    const b = `blk.${l}.`;
    ones(b + 'attn_norm.weight');
    q4(b + 'attn_q.weight', [D, D]);
    q4(b + 'attn_k.weight', [D, kd]);
    q4(b + 'attn_v.weight', [D, kd]);
    q4(b + 'attn_output.weight', [D, D]);
    ones(b + 'ffn_norm.weight');
    if (s.nExpert) {
      const E = s.nExpert;
      g.addTensor({
        name: b + 'ffn_gate_inp.weight', type: 'F32', shape: [D, E],
        data: () => Float32Array.from({ length: D * E }, () => (Math.random() - 0.5) * 0.1),
      });
      q4(b + 'ffn_gate_exps.weight', [D, s.nFf, E]);
      q4(b + 'ffn_up_exps.weight', [D, s.nFf, E]);
      q4(b + 'ffn_down_exps.weight', [s.nFf, D, E]);
    } else {
      q4(b + 'ffn_gate.weight', [D, s.nFf]);
      q4(b + 'ffn_up.weight', [D, s.nFf]);
      q4(b + 'ffn_down.weight', [s.nFf, D]);
    }
  }
  g.writeFile(path);
}

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
