// What the load-time Q4_0 repack (issue #18 item 3) costs in memory and load time: for each model,
// repack off (EDGELLM_REPACK=0) and on, a fresh Node process loads the model, decodes one token
// (which reads every matrix once: the steady state of a serving daemon) and reports its load time
// and its resident memory from /proc/self/status, then this script checks the bound
//   steady RSS growth <= file size + one sequence's KV cache + 64 MB
// where growth is VmRSS after the decode minus VmRSS of the same process before the load (the bare
// Node runtime, ~40-60 MB, is not the model's). Peak is VmHWM, the high-water mark of the process.
//
// The repack runs at load only with the neon-dotprod table (a Pi 5); on other hosts "on" means
// EDGELLM_REPACK=force, the same code path (model.cpp repack_matrix: the Q4_0 matrices rewritten in
// place into private copies of the mapping's pages), and both runs use the reference kernels, the
// x86 table that runs repacked Q4_0 (the speed is not measured here). The memory mechanism does not
// depend on the ISA; the C++ test `repack a_repacked_model_costs_no_more_rss_than_the_file` measures
// the same under qemu-aarch64 -cpu cortex-a76 (see docs/repack-memory.md for why RSS under qemu-user
// is the guest's plus qemu's own and what that means for the figures).
//
// Models: TinyLLama-v0 (Q4_0, /work/shared/models or --tinyllama PATH) and a random dense llama of
// 12 layers written with the engine's GGUF writer (113 MB, Q4_0). Runs on the built package
// (npm run build). Usage: node scripts/bench-repack-memory.mjs [--json] [--runs N] [--tinyllama PATH]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const MB = 1024 * 1024;
const CONTEXT = 512;

/** kB fields of /proc/self/status, in bytes. */
function status() {
  const s = readFileSync('/proc/self/status', 'utf8');
  const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile'), hwm: kb('VmHWM') };
}

// The measured process: load, decode one token, report.
if (args[0] === '--child') {
  const { loadModel } = await import(join(root, 'dist/engine/model.js'));
  const before = status();
  const t0 = performance.now();
  const model = await loadModel(args[1], { threads: 1, contextSize: CONTEXT });
  const loadMs = performance.now() - t0;
  const loaded = status();
  await model.evalLogits([1]);
  const decoded = status();
  const info = model.info();
  model.close();
  console.log(JSON.stringify({ loadMs, before, loaded, decoded, kvBytes: info.kv_bytes_per_sequence, weightBytes: info.weight_bytes }));
  process.exit(0);
}

if (!existsSync('/proc/self/status')) {
  console.error('bench-repack-memory: needs Linux /proc/self/status (VmRSS, VmHWM)');
  process.exit(2);
}
if (!existsSync(join(root, 'dist/engine/model.js'))) {
  console.error('bench-repack-memory: dist/ missing; run npm run build first');
  process.exit(2);
}
const JSON_OUT = args.includes('--json');
const RUNS = Number(opt('--runs', '3'));
const tinyllama = opt('--tinyllama', '/work/shared/models/TinyLLama-v0-Q4_0.gguf');
if (!existsSync(tinyllama)) {
  console.error(`bench-repack-memory: ${tinyllama} not found; pass --tinyllama PATH to TinyLLama-v0-Q4_0.gguf`);
  process.exit(2);
}

const dir = mkdtempSync(join(tmpdir(), 'edgellm-repack-memory-'));
const rows = [];
let failed = false;
try {
  const { DENSE, writeModel } = await import('./lib/bench-models.mjs');
  const dense = join(dir, 'dense-12-layers-q4_0.gguf');
  writeModel({ ...DENSE, name: 'dense 1024x12, ffn 2816', nLayer: 12 }, dense);
  const models = [
    { name: 'TinyLLama-v0 Q4_0', path: tinyllama },
    { name: 'random dense 1024x12 Q4_0', path: dense },
  ];
  const modes = [
    { repack: 'off', env: { EDGELLM_REPACK: '0', EDGELLM_KERNELS: 'reference' } },
    { repack: 'on', env: { EDGELLM_REPACK: 'force', EDGELLM_KERNELS: 'reference' } },
  ];
  for (const m of models) {
    const fileBytes = statSync(m.path).size;
    for (const mode of modes) {
      // Load time: the best of RUNS fresh processes (the machine may be busy); memory: the run
      // with the highest steady growth (the bound must hold for every run).
      const runs = [];
      for (let i = 0; i < RUNS; i++) {
        const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', m.path], {
          encoding: 'utf8', env: { ...process.env, ...mode.env },
        });
        if (r.status !== 0) throw new Error(`${m.name} repack ${mode.repack}: child failed (${r.status}): ${r.stderr}`);
        runs.push(JSON.parse(r.stdout.trim().split('\n').pop()));
      }
      const worst = runs.reduce((a, b) => (b.decoded.rss - b.before.rss > a.decoded.rss - a.before.rss ? b : a));
      const steadyGrowth = worst.decoded.rss - worst.before.rss;
      const bound = fileBytes + worst.kvBytes + 64 * MB;
      const ok = steadyGrowth <= bound;
      failed ||= !ok;
      rows.push({
        model: m.name, repack: mode.repack, file_mb: +(fileBytes / MB).toFixed(1), kv_mb: +(worst.kvBytes / MB).toFixed(1),
        load_ms: +Math.min(...runs.map((r) => r.loadMs)).toFixed(1),
        rss_before_mb: +(worst.before.rss / MB).toFixed(1),
        rss_after_load_mb: +(worst.loaded.rss / MB).toFixed(1),
        steady_rss_mb: +(worst.decoded.rss / MB).toFixed(1),
        steady_anon_mb: +(worst.decoded.anon / MB).toFixed(1),
        steady_file_mb: +(worst.decoded.file / MB).toFixed(1),
        peak_rss_mb: +(worst.decoded.hwm / MB).toFixed(1),
        steady_growth_mb: +(steadyGrowth / MB).toFixed(1),
        peak_growth_mb: +((worst.decoded.hwm - worst.before.rss) / MB).toFixed(1),
        bound_mb: +(bound / MB).toFixed(1), ok, runs: RUNS,
      });
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

if (JSON_OUT) {
  console.log(JSON.stringify({ context: CONTEXT, rows }, null, 2));
} else {
  console.log(`Repack memory (context ${CONTEXT}, one token decoded; growth = over the Node process before the load; MB = MiB)`);
  console.log('| model | repack | file | KV | load ms | RSS after load | steady RSS (anon + file) | peak RSS | steady growth | peak growth | bound file+KV+64 |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(
      `| ${r.model} | ${r.repack} | ${r.file_mb} | ${r.kv_mb} | ${r.load_ms} | ${r.rss_after_load_mb} | ` +
        `${r.steady_rss_mb} (${r.steady_anon_mb} + ${r.steady_file_mb}) | ${r.peak_rss_mb} | ${r.steady_growth_mb} | ${r.peak_growth_mb} | ${r.bound_mb} ${r.ok ? 'ok' : 'EXCEEDED'} |`,
    );
  }
}
process.exit(failed ? 1 : 0);
