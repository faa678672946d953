// scripts/arm-model.mjs (`npm run bench:arm-model`): every hot NEON loop it prices is found in the
// aarch64 assembly through its markers, for both CPU models, with plausible figures. Needs
// aarch64-linux-gnu-g++ and llvm-mca-19: without them the test skips loudly, and under CI=true
// it fails when .ci/run installs them (then their absence is a broken CI image, not a choice).
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const tools = [
  { cmd: 'aarch64-linux-gnu-g++', pkg: 'g++-aarch64-linux-gnu' },
  { cmd: 'llvm-mca-19', pkg: 'llvm-19' },
];
const missing = tools.filter(({ cmd }) => {
  try {
    execFileSync(cmd, ['--version'], { stdio: 'ignore' });
    return false;
  } catch {
    return true;
  }
});
const ciInstalls = (pkg: string): boolean => readFileSync(join(root, '.ci/run'), 'utf8').includes(pkg);

interface Row {
  kernel: string;
  type: string;
  columns: number;
  cpu_model: string;
  weights_per_iter: number;
  cycles_per_block: number;
  bottleneck: string;
}

if (missing.length > 0) {
  const pkgs = missing.map((m) => m.pkg).join(' ');
  if (process.env.CI === 'true' && missing.some((m) => ciInstalls(m.pkg))) {
    t.fail(`arm-model: ${missing.map((m) => m.cmd).join(', ')} missing although .ci/run installs ${pkgs}`);
  } else {
    console.error(`arm-model.test: SKIPPED: ${missing.map((m) => m.cmd).join(', ')} not found (apt-get install ${pkgs})`);
    t.skip(`needs ${pkgs}`, () => {});
  }
} else {
  // Compiling the K-quant NEON files alone takes over a minute (gemm_k_dotprod.cpp ~70 s on one
  // core): more than the 300 s file timeout allows on a loaded machine.
  t.setTimeout(900_000);
  t.test('bench:arm-model prices every marked loop on neoverse-n1 and cortex-a72', async (t) => {
    const r = spawnSync(process.execPath, [join(root, 'scripts/arm-model.mjs')], { encoding: 'utf8' });
    t.equal(r.status, 0, r.stderr);
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Row);
    const want = [
      ['gemv', 'q4_0', 1],
      ['gemm', 'q4_0', 4],
      ['gemm', 'q4_0', 16],
      ['gemv', 'q4_k', 1],
    ] as const;
    // Q4_0, Q4_K and Q6_K repacked at load (Q4_0_X4, Q4_K_X4, Q6_K_X4) run only on the dotprod table.
    const repacked = [
      ['gemv', 'q4_0_x4', 1],
      ['gemm', 'q4_0_x4', 4],
      ['gemm', 'q4_0_x4', 16],
      ['gemv', 'q4_k_x4', 1],
      ['gemm', 'q4_k_x4', 4],
      ['gemv', 'q6_k_x4', 1],
      ['gemm', 'q6_k_x4', 4],
    ] as const;
    for (const cpu of ['neoverse-n1', 'cortex-a72']) {
      for (const [kernel, type, columns] of cpu === 'neoverse-n1' ? [...want, ...repacked] : want) {
        const row = rows.find((x) => x.cpu_model === cpu && x.kernel === kernel && x.type === type && x.columns === columns);
        if (!t.ok(row, `${cpu} ${type} ${kernel} ${columns} column(s) priced`) || !row) continue;
        // A 32-weight block takes a few SIMD instructions per column: far from 0 and from 50 cycles.
        t.ok(row.cycles_per_block > 0.3 && row.cycles_per_block < 50, `${cpu} ${type} ${kernel}: ${row.cycles_per_block} cycles/block`);
        t.ok(row.weights_per_iter % 32 === 0 && row.weights_per_iter > 0, 'whole blocks per iteration');
        t.match(row.bottleneck, /^(resource \S+|dependency)$/);
      }
    }
    // Only the dotprod table repacks: no repacked loop is priced for the Pi 4.
    t.notOk(rows.some((x) => x.cpu_model === 'cortex-a72' && x.type.endsWith('_x4')), 'no repacked loop on cortex-a72');
  });
  t.test('--only prices just the types it names', async (t) => {
    const r = spawnSync(process.execPath, [join(root, 'scripts/arm-model.mjs'), '--only', 'q4_k_x4'], { encoding: 'utf8' });
    t.equal(r.status, 0, r.stderr);
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Row);
    t.same([...new Set(rows.map((x) => `${x.type} ${x.cpu_model} ${x.columns}`))].sort(), ['q4_k_x4 neoverse-n1 1', 'q4_k_x4 neoverse-n1 4']);
  });
}
