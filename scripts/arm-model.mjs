// Is K-quant decode memory-bound on a Raspberry Pi? A static model from the compiled code (issue
// #12's ARM criterion), for machines without an ARM CPU: it compiles the NEON K-quant GEMMs to
// aarch64 assembly, takes the GEMV's super-block loop (the 4-row decode tile, ncols == 1) exactly
// as the compiler emitted it, prices one iteration with llvm-mca, and turns that into the
// weight bytes one core can consume per cycle and per second, next to the DRAM bandwidth.
//
// The loop is found through markers that gemm_k_tiles.h emits only under -DEDGELLM_MCA_MARKERS
// (asm comments "edgellm-mca superblock-begin/-end" in KTile::run<4, 1>): the loop is the span
// from the label that the first backward branch after the end marker jumps to, up to that
// branch, so loop-carried bookkeeping that the compiler moved around the markers is included.
// One iteration is one super-block of 4 weight rows = 1024 weights.
//
// Needs aarch64-linux-gnu-g++ (Debian g++-aarch64-linux-gnu) and llvm-mca-19 (Debian llvm-19);
// installs nothing. Usage: node scripts/arm-model.mjs [--ghz 2.4] [--dram 17,10] [--json]
//   --ghz    core clock (Pi 5: 2.4; Pi 4: 1.5 or 1.8)
//   --dram   DRAM read bandwidths in GB/s to compare with (Pi 5 LPDDR4X-4267: ~17 theoretical,
//            ~10-12 measured with 4 cores)
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
const ITERATIONS = 200;

// Weight bytes per 256 weights (one super-block) of each type the model covers.
const TYPES = [
  { type: 'q4_k', fn: 'gemm_q4_k', format: 'Q4KFormat', bytes: 144 },
  { type: 'q6_k', fn: 'gemm_q6_k', format: 'Q6KFormat', bytes: 210 },
];
// The two ARM tables: the dotprod file for a Cortex-A76 (Pi 5; llvm-mca has no cortex-a76 model
// with sdot timings of its own, neoverse-n1 is the same core design) and the plain file for a
// Cortex-A72 (Pi 4).
const TARGETS = [
  { table: 'neon-dotprod', source: 'gemm_k_dotprod.cpp', march: 'armv8.2-a+dotprod', mcpu: 'neoverse-n1', core: 'Cortex-A76 (Pi 5)' },
  { table: 'neon', source: 'gemm_k.cpp', march: 'armv8-a', mcpu: 'cortex-a72', core: 'Cortex-A72 (Pi 4)' },
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
function compile(target, dir) {
  const out = join(dir, target.source.replace(/\.cpp$/, '.s'));
  execFileSync('aarch64-linux-gnu-g++', [
    '-std=c++17', '-O3', `-march=${target.march}`, '-ffp-contract=off', '-fno-math-errno',
    '-DEDGELLM_MCA_MARKERS', '-I', join(root, 'native/src'), '-S',
    join(root, 'native/src/kernels/neon', target.source), '-o', out,
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

// The loops around the markers in one function's lines: for each begin/end pair (the compiler
// may emit more than one copy, e.g. a peeled first iteration), the span from the label that the
// first backward branch after the end marker jumps to, up to that branch. Copies without such a
// branch run once per call and are not the loop.
function markedLoops(body) {
  const at = (what) => body.flatMap((l, i) => (l.includes(`edgellm-mca superblock-${what}`) ? [i] : []));
  const begins = at('begin'), ends = at('end');
  if (begins.length === 0 || begins.length !== ends.length) {
    return { error: `unpaired markers: ${begins.length} begin / ${ends.length} end` };
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
      if (t && labels.has(t) && labels.get(t) > i) continue;  // a forward branch inside the body
    }
  });
  return loops.length ? { loops } : { error: 'no backward branch around the markers' };
}

function mca(mcpu, loopLines, dir) {
  const file = join(dir, `loop-${mcpu}.s`);
  writeFileSync(file, loopLines.join('\n') + '\n');
  const out = execFileSync('llvm-mca-19', ['-mtriple=aarch64-linux-gnu', `-mcpu=${mcpu}`, `-iterations=${ITERATIONS}`, file], {
    encoding: 'utf8',
  });
  const num = (re) => Number(re.exec(out)?.[1]);
  return {
    totalCycles: num(/Total Cycles:\s+(\d+)/),
    instructions: num(/Instructions:\s+(\d+)/) / ITERATIONS,
    blockRThroughput: num(/Block RThroughput:\s+([\d.]+)/),
    ipc: num(/IPC:\s+([\d.]+)/),
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

need('aarch64-linux-gnu-g++');
need('llvm-mca-19');
const dir = mkdtempSync(join(tmpdir(), 'edgellm-arm-model-'));
const rows = [];
try {
  for (const target of TARGETS) {
    const fns = functions(compile(target, dir));
    for (const t of TYPES) {
      // The tile may be inlined into gemm_q*_k or stay a function of its own (KTile<Format, ...>).
      const candidates = [...fns.entries()].filter(
        ([name, body]) => (name.includes(t.fn) || name.includes(t.format)) && body.some((l) => l.includes('edgellm-mca')),
      );
      if (candidates.length !== 1) throw new Error(`${target.source} ${t.type}: ${candidates.length} functions hold the markers`);
      const [name, body] = candidates[0];
      const found = markedLoops(body);
      if (found.error) throw new Error(`${target.source} ${t.type} (${name}): ${found.error}`);
      // With several copies of the loop, price the slowest.
      const priced = found.loops.map((l) => ({ ...l, m: mca(target.mcpu, l.loop, dir) }));
      priced.sort((x, y) => y.m.totalCycles - x.m.totalCycles);
      const { m, loop } = priced[0];
      const cyclesPerIter = m.totalCycles / ITERATIONS;
      const cyclesPer256 = cyclesPerIter / 4;
      const bytesPerCycle = t.bytes / cyclesPer256;
      const gbPerCore = (bytesPerCycle * GHZ * 1e9) / 1e9;
      rows.push({
        core: target.core, table: target.table, mcpu: target.mcpu, type: t.type,
        loopCopies: found.loops.length, instructionsPerIteration: m.instructions, ...mix(loop),
        cyclesPer256Weights: +cyclesPer256.toFixed(1), blockRThroughputPer256: +(m.blockRThroughput / 4).toFixed(1),
        ipc: m.ipc, bytesPer256: t.bytes, bytesPerCycle: +bytesPerCycle.toFixed(2),
        gbPerSecPerCore: +gbPerCore.toFixed(1),
        coresToSaturate: Object.fromEntries(DRAM.map((d) => [`${d}GBs`, +(d / gbPerCore).toFixed(2)])),
      });
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

if (JSON_OUT) {
  console.log(JSON.stringify({ ghz: GHZ, dram: DRAM, iterations: ITERATIONS, rows }, null, 2));
} else {
  console.log(`K-quant GEMV loop, one iteration = 4 rows x 256 weights; llvm-mca-19, ${ITERATIONS} iterations; clock ${GHZ} GHz`);
  for (const r of rows) {
    console.log(
      `${r.core.padEnd(18)} ${r.table.padEnd(12)} ${r.type}: ${r.instructionsPerIteration} instr/iter ` +
        `(loads ${r.loads}, sdot ${r.sdot}, smull/smlal ${r.smull_smlal}, mla ${r.mla}, stack ${r.stack}), ` +
        `${r.cyclesPer256Weights} cycles/256 w (RThroughput ${r.blockRThroughputPer256}), IPC ${r.ipc}, ` +
        `${r.bytesPer256} B/256 w -> ${r.bytesPerCycle} B/cycle = ${r.gbPerSecPerCore} GB/s per core; ` +
        `cores to reach ${DRAM.map((d) => `${d} GB/s: ${r.coresToSaturate[`${d}GBs`]}`).join(', ')}`,
    );
  }
}
