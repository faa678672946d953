// A static cost model of edgellm's NEON hot loops, for machines without an ARM CPU (issue #18):
// it compiles the NEON GEMM files to aarch64 assembly, takes each tile's inner loop exactly as the
// compiler emitted it, and prices one iteration with llvm-mca-19, on neoverse-n1 (the server twin
// of the Pi 5's Cortex-A76: llvm-mca has no cortex-a76 model with sdot timings of its own) and
// cortex-a72 (Pi 4).
//
// Each loop is found through markers that gemm_tiles.h emits only under -DEDGELLM_MCA_MARKERS
// (asm comments "edgellm-mca <what>-begin r<R> c<C>" / "-end", R rows x C columns): the loop is
// the span from the label that the first backward branch after the end marker jumps to, up to
// that branch. Nothing depends on the compiler's label names.
//
// Default output: one JSON line per kernel and CPU model,
//   {kernel, type, columns, cpu_model, weights_per_iter, cycles_per_block, bottleneck, ...}
// cycles_per_block: cycles per 32 weights of one row and per activation column (for the K-quants
// too: a super-block is 8 such blocks); weights_per_iter: weights of all rows one iteration reads
// (each serves `columns` columns); bottleneck: "resource <unit>" when the busiest llvm-mca resource
// accounts for the cycles, else "dependency".
// --bandwidth: the K-quant GEMV report of issue #12 instead (weight bytes one core consumes per
// second next to the DRAM bandwidth). --ghz 2.4 (Pi 5; Pi 4: 1.5 or 1.8), --dram 17,10 (GB/s).
//
// Needs aarch64-linux-gnu-g++ (Debian g++-aarch64-linux-gnu) and llvm-mca-19 (Debian llvm-19);
// installs nothing. Usage: node scripts/arm-model.mjs [--only TYPE[,TYPE]] [--bandwidth [--ghz G] [--dram A,B] [--json]]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const GHZ = Number(opt('--ghz', '2.4'));
const DRAM = opt('--dram', '17,10').split(',').map(Number);
const JSON_OUT = args.includes('--json');
const BANDWIDTH = args.includes('--bandwidth');
const ITERATIONS = 200;
// --only TYPE[,TYPE]: price only those types (a quicker look while working on one kernel).
const ONLY = opt('--only', '').split(',').filter(Boolean);

// The two ARM tables per source pair: the dotprod files for a Cortex-A76 (Pi 5), the plain files
// for a Cortex-A72 (Pi 4).
const TARGETS = [
  { table: 'neon-dotprod', suffix: '_dotprod', march: 'armv8.2-a+dotprod', mcpu: 'neoverse-n1', core: 'Cortex-A76 (Pi 5)' },
  { table: 'neon', suffix: '', march: 'armv8-a', mcpu: 'cortex-a72', core: 'Cortex-A72 (Pi 4)' },
];

// The loops priced. source: the file without its table suffix; fn: a substring of the function
// (or of the out-of-line tile's name) holding the loop; what/rows/cols: its markers; weights: of
// one row per iteration; columns: the activation columns a block serves (the 16-column GEMM runs
// the same 4-column tile four times today).
const KERNELS = [
  { kernel: 'gemv', type: 'q4_0', source: 'gemm', fn: ['gemm_q4_0', 'Q4_0Codes'], what: 'block', rows: 4, cols: 1, weights: 32, columns: 1 },
  { kernel: 'gemm', type: 'q4_0', source: 'gemm', fn: ['gemm_q4_0', 'Q4_0Codes'], what: 'block', rows: 4, cols: 4, weights: 32, columns: 4 },
  { kernel: 'gemm', type: 'q4_0', source: 'gemm', fn: ['gemm_q4_0', 'Q4_0Codes'], what: 'block', rows: 4, cols: 4, weights: 32, columns: 16 },
  // Q4_0 repacked at load (Q4_0_X4, dotprod table only): 4-row groups, 8-column prompt tiles.
  { kernel: 'gemv', type: 'q4_0_x4', source: 'gemm_repacked', fn: ['gemm_q4_0_x4', 'group_tile', 'run_group'], what: 'x4block', rows: 4, cols: 1, weights: 32, columns: 1, only: 'neon-dotprod' },
  { kernel: 'gemm', type: 'q4_0_x4', source: 'gemm_repacked', fn: ['gemm_q4_0_x4', 'group_tile', 'run_group'], what: 'x4block', rows: 4, cols: 4, weights: 32, columns: 4, only: 'neon-dotprod' },
  { kernel: 'gemm', type: 'q4_0_x4', source: 'gemm_repacked', fn: ['gemm_q4_0_x4', 'group_tile', 'run_group'], what: 'x4block', rows: 4, cols: 8, weights: 32, columns: 8, only: 'neon-dotprod' },
  { kernel: 'gemm', type: 'q4_0_x4', source: 'gemm_repacked', fn: ['gemm_q4_0_x4', 'group_tile', 'run_group'], what: 'x4block', rows: 4, cols: 16, weights: 32, columns: 16, only: 'neon-dotprod' },
  // Q4_K repacked at load (Q4_K_X4, dotprod table only): 4-row groups, up to 4-column tiles.
  { kernel: 'gemv', type: 'q4_k_x4', source: 'gemm_repacked', fn: ['Q4KX4', 'run_k_group'], what: 'kx4block', rows: 4, cols: 1, weights: 256, columns: 1, only: 'neon-dotprod' },
  { kernel: 'gemm', type: 'q4_k_x4', source: 'gemm_repacked', fn: ['Q4KX4', 'run_k_group'], what: 'kx4block', rows: 4, cols: 4, weights: 256, columns: 4, only: 'neon-dotprod' },
  // Q6_K repacked at load (Q6_K_X4, dotprod table only), the same tiles.
  { kernel: 'gemv', type: 'q6_k_x4', source: 'gemm_repacked', fn: ['Q6KX4', 'run_k_group'], what: 'q6x4block', rows: 4, cols: 1, weights: 256, columns: 1, only: 'neon-dotprod' },
  { kernel: 'gemm', type: 'q6_k_x4', source: 'gemm_repacked', fn: ['Q6KX4', 'run_k_group'], what: 'q6x4block', rows: 4, cols: 4, weights: 256, columns: 4, only: 'neon-dotprod' },
  { kernel: 'gemv', type: 'q4_k', source: 'gemm_k', fn: ['gemm_q4_k', 'Q4KFormat'], what: 'superblock', rows: 4, cols: 1, weights: 256, columns: 1, bytes: 144 },
  { kernel: 'gemv', type: 'q6_k', source: 'gemm_k', fn: ['gemm_q6_k', 'Q6KFormat'], what: 'superblock', rows: 4, cols: 1, weights: 256, columns: 1, bytes: 210 },
];

function need(cmd) {
  try {
    execFileSync(cmd, ['--version'], { stdio: 'ignore' });
  } catch {
    const pkg = cmd.startsWith('llvm-mca') ? 'llvm-19' : 'g++-aarch64-linux-gnu';
    console.error(`arm-model: ${cmd} not found; install it with: apt-get install ${pkg}`);
    process.exit(2);
  }
}

// Assembly of one NEON source with the markers, as the build compiles it (-O3, no FP contraction).
function compile(source, target, dir) {
  const file = `${source}${target.suffix}.cpp`;
  const out = join(dir, file.replace(/\.cpp$/, '.s'));
  execFileSync('aarch64-linux-gnu-g++', [
    '-std=c++17', '-O3', `-march=${target.march}`, '-ffp-contract=off', '-fno-math-errno',
    '-DEDGELLM_MCA_MARKERS', '-I', join(root, 'native/src'), '-S',
    join(root, 'native/src/kernels/neon', file), '-o', out,
  ]);
  return readFileSync(out, 'utf8').split('\n');
}

// The functions of an assembly listing: name -> lines (from the label to .size).
function functions(lines) {
  const fns = new Map();
  let name = null;
  for (const line of lines) {
    const m = /^(\S+):/.exec(line);
    if (m && !m[1].startsWith('.')) {
      name = m[1];
      fns.set(name, []);
    }
    if (name) fns.get(name).push(line);
    if (name && /^\s*\.size\s/.test(line)) name = null;
  }
  return fns;
}

const isInstruction = (l) => /^\s+[a-z]/.test(l) && !/^\s+\./.test(l);
const branchTarget = (l) => /^\s+(?:b(?:\.?(?:eq|ne|lt|le|gt|ge|hi|ls|lo|hs|cc|cs|mi|pl|vs|vc))?|cbn?z|tbn?z)\s+(?:[^,]+,\s*)*(\.L\w+)\s*$/.exec(l)?.[1];

// The loops around one tile's markers ("edgellm-mca <what>-begin r<R> c<C>", gemm_tiles.h) in one
// function's lines: for each begin/end pair (the compiler may emit more than one copy, e.g. a
// peeled first iteration), the span from the label that the first backward branch after the end
// marker jumps to, up to that branch, so loop-carried bookkeeping that the compiler moved around
// the markers is included. Copies without such a branch run once per call and are not the loop.
function markedLoops(body, what, tile) {
  const at = (edge) => body.flatMap((l, i) => (l.includes(`edgellm-mca ${what}-${edge} ${tile}`) && /\S\s*$/.test(l) && l.trimEnd().endsWith(tile) ? [i] : []));
  const begins = at('begin'), ends = at('end');
  if (begins.length === 0 || begins.length !== ends.length) {
    return { error: `unpaired markers ${what} ${tile}: ${begins.length} begin / ${ends.length} end` };
  }
  const labels = new Map(body.flatMap((l, i) => (/^(\.L\w+):/.test(l) ? [[/^(\.L\w+):/.exec(l)[1], i]] : [])));
  const loops = [];
  begins.forEach((begin, k) => {
    for (let i = ends[k]; i < body.length; ++i) {
      const t = branchTarget(body[i]);
      if (t && labels.has(t) && labels.get(t) <= begin) {
        loops.push({ from: t, loop: body.slice(labels.get(t), i + 1).filter((l) => isInstruction(l) || /^\.L\w+:/.test(l)) });
        return;
      }
    }
  });
  return loops.length ? { loops } : { error: `no backward branch around the ${what} ${tile} markers` };
}

// llvm-mca's figures for one loop: cycles and instructions per iteration, and the busiest
// resource (from "Resource pressure per iteration").
function mca(mcpu, loopLines, dir) {
  const file = join(dir, `loop-${mcpu}.s`);
  writeFileSync(file, loopLines.join('\n') + '\n');
  const out = execFileSync('llvm-mca-19', ['-mtriple=aarch64-linux-gnu', `-mcpu=${mcpu}`, `-iterations=${ITERATIONS}`, file], {
    encoding: 'utf8',
  });
  const num = (re) => Number(re.exec(out)?.[1]);
  const names = new Map([...out.matchAll(/^\[([\d.]+)\]\s+-\s+(\S+)/gm)].map((m) => [m[1], m[2]]));
  const pressure = /Resource pressure per iteration:\n(.*)\n(.*)\n/.exec(out);
  let busiest = { unit: '?', cycles: 0 };
  if (pressure) {
    const units = pressure[1].trim().split(/\s+/).map((u) => u.replace(/[[\]]/g, ''));
    const values = pressure[2].trim().split(/\s+/).map((v) => (v === '-' ? 0 : Number(v)));
    units.forEach((u, i) => {
      if (values[i] > busiest.cycles) busiest = { unit: names.get(u) ?? u, cycles: values[i] };
    });
  }
  return {
    totalCycles: num(/Total Cycles:\s+(\d+)/),
    instructions: num(/Instructions:\s+(\d+)/) / ITERATIONS,
    blockRThroughput: num(/Block RThroughput:\s+([\d.]+)/),
    ipc: num(/IPC:\s+([\d.]+)/),
    busiest,
  };
}

// How many instructions of each kind one iteration has (what the cycles are spent on).
function mix(loop) {
  const count = (re) => loop.filter((l) => re.test(l)).length;
  return {
    loads: count(/^\s+ld[rp1]/),
    sdot: count(/^\s+sdot\s/),
    smull_smlal: count(/^\s+s(mull|mlal)2?\s/),
    mla: count(/^\s+mla\s/),
    stack: count(/\[sp/),
  };
}

// The priced loop of kernel k in one target's assembly (the slowest copy when there are several).
function price(k, target, fns, dir) {
  const tile = `r${k.rows} c${k.cols}`;
  const marker = `edgellm-mca ${k.what}-begin ${tile}`;
  const candidates = [...fns.entries()].filter(
    ([name, body]) => k.fn.some((f) => name.includes(f)) && body.some((l) => l.trimEnd().endsWith(marker)),
  );
  // The compiler may clone a function (constprop, isra): every copy counts.
  if (candidates.length === 0) throw new Error(`${k.source}${target.suffix}.cpp ${k.type} ${tile}: no function holds the markers`);
  const found = { loops: [] };
  for (const [name, body] of candidates) {
    const f = markedLoops(body, k.what, tile);
    if (f.error) throw new Error(`${k.source}${target.suffix}.cpp ${k.type} (${name}): ${f.error}`);
    found.loops.push(...f.loops);
  }
  const priced = found.loops.map((l) => ({ ...l, m: mca(target.mcpu, l.loop, dir) }));
  priced.sort((x, y) => y.m.totalCycles - x.m.totalCycles);
  return { copies: found.loops.length, ...priced[0] };
}

need('aarch64-linux-gnu-g++');
need('llvm-mca-19');
const dir = mkdtempSync(join(tmpdir(), 'edgellm-arm-model-'));
const rows = [];
try {
  for (const target of TARGETS) {
    const listings = new Map();
    for (const k of KERNELS) {
      if (BANDWIDTH && k.bytes === undefined) continue;
      if (k.only && k.only !== target.table) continue;
      if (ONLY.length && !ONLY.includes(k.type)) continue;
      if (!listings.has(k.source)) listings.set(k.source, functions(compile(k.source, target, dir)));
      const { copies, m, loop } = price(k, target, listings.get(k.source), dir);
      const cyclesPerIter = m.totalCycles / ITERATIONS;
      const blocks = (k.rows * k.weights) / 32;  // 32-weight blocks of one row, all rows
      const row = {
        kernel: k.kernel, type: k.type, columns: k.columns, cpu_model: target.mcpu,
        weights_per_iter: k.rows * k.weights,
        cycles_per_block: +(cyclesPerIter / (blocks * k.cols)).toFixed(2),
        bottleneck: m.busiest.cycles >= 0.9 * cyclesPerIter ? `resource ${m.busiest.unit}` : 'dependency',
        table: target.table, tile: `${k.rows}x${k.cols}`, loop_copies: copies,
        instructions_per_iter: m.instructions, ...mix(loop), ipc: m.ipc,
      };
      if (BANDWIDTH) {
        const cyclesPer256 = cyclesPerIter / k.rows;
        const bytesPerCycle = k.bytes / cyclesPer256;
        const gbPerCore = bytesPerCycle * GHZ;
        Object.assign(row, {
          core: target.core, cyclesPer256Weights: +cyclesPer256.toFixed(1), bytesPer256: k.bytes,
          bytesPerCycle: +bytesPerCycle.toFixed(2), gbPerSecPerCore: +gbPerCore.toFixed(1),
          coresToSaturate: Object.fromEntries(DRAM.map((d) => [`${d}GBs`, +(d / gbPerCore).toFixed(2)])),
        });
      }
      rows.push(row);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

if (!BANDWIDTH) {
  for (const r of rows) console.log(JSON.stringify(r));
} else if (JSON_OUT) {
  console.log(JSON.stringify({ ghz: GHZ, dram: DRAM, iterations: ITERATIONS, rows }, null, 2));
} else {
  console.log(`K-quant GEMV loop, one iteration = 4 rows x 256 weights; llvm-mca-19, ${ITERATIONS} iterations; clock ${GHZ} GHz`);
  for (const r of rows) {
    console.log(
      `${r.core.padEnd(18)} ${r.table.padEnd(12)} ${r.type}: ${r.instructions_per_iter} instr/iter ` +
        `(loads ${r.loads}, sdot ${r.sdot}, smull/smlal ${r.smull_smlal}, mla ${r.mla}, stack ${r.stack}), ` +
        `${r.cyclesPer256Weights} cycles/256 w, IPC ${r.ipc}, ` +
        `${r.bytesPer256} B/256 w -> ${r.bytesPerCycle} B/cycle = ${r.gbPerSecPerCore} GB/s per core; ` +
        `cores to reach ${DRAM.map((d) => `${d} GB/s: ${r.coresToSaturate[`${d}GBs`]}`).join(', ')}`,
    );
  }
}
