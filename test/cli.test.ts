// The CLI as a user runs it: the built entry point, real processes, real exit codes.
import t from 'tap';
import { assertCliBuilt, run } from './fixtures/paths.js';

t.before(assertCliBuilt);

t.test('--help lists the commands and exits 0', async (t) => {
  const r = run(['--help']);
  t.equal(r.status, 0);
  t.match(r.stdout, /Usage: edgellm/);
  t.match(r.stdout, /bench/);
});

t.test('--version prints the package version', async (t) => {
  const r = run(['--version']);
  t.equal(r.status, 0);
  t.match(r.stdout.trim(), /^\d+\.\d+\.\d+/);
});

t.test('an unknown benchmark is one clear line and exit 2', async (t) => {
  const r = run(['bench', 'gpu']);
  t.equal(r.status, 2);
  t.equal(r.stderr.trim().split('\n').length, 1);
  t.match(r.stderr, /E_BAD_ARGUMENT: unknown benchmark "gpu"/);
});

t.test('bad flag values name the flag', async (t) => {
  for (const [args, re] of [
    [['bench', 'kernels', '--threads', '0'], /--threads takes a positive whole number/],
    [['bench', 'kernels', '--shapes', '64x33'], /cols must be a multiple of 32/],
    [['bench', 'kernels', '--shapes', 'big'], /--shapes takes ROWSxCOLS/],
    [['bench', 'kernels', '--min-seconds', '-1'], /--min-seconds takes a positive number/],
  ] as Array<[string[], RegExp]>) {
    const r = run(args);
    t.equal(r.status, 2, args.join(' '));
    t.match(r.stderr, re, args.join(' '));
  }
});

t.test('an unknown command fails with usage help', async (t) => {
  const r = run(['frobnicate']);
  t.not(r.status, 0);
  t.match(r.stderr, /unknown command/);
});

t.test('bench kernels --json prints one object per line with bandwidth and ratio', async (t) => {
  const r = run([
    'bench', 'kernels', '--json', '--threads', '1,2', '--shapes', '256x512,96x2048',
    '--min-seconds', '0.02', '--working-set-mb', '16',
  ]);
  t.equal(r.status, 0, r.stderr);
  const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const gemv = rows.filter((x) => x.name === 'gemv_q4_0');
  const bw = rows.filter((x) => x.name === 'read_bandwidth');
  t.equal(gemv.length, 4, 'two shapes x two thread counts');
  t.equal(bw.length, 2, 'one bandwidth measurement per thread count');
  for (const row of rows) {
    for (const key of ['name', 'rows', 'cols', 'threads', 'gbps', 'peak_gbps', 'ratio']) t.ok(key in row, key);
    t.ok(Number.isFinite(row.gbps) && (row.gbps as number) > 0, 'gbps > 0');
    t.ok(Number.isFinite(row.peak_gbps) && (row.peak_gbps as number) > 0, 'peak_gbps > 0');
  }
  t.same(new Set(gemv.map((x) => `${x.rows}x${x.cols}@${x.threads}`)),
    new Set(['256x512@1', '256x512@2', '96x2048@1', '96x2048@2']));
});

t.test('bench kernels prints a table with the CPU and kernel table', async (t) => {
  const r = run(['bench', 'kernels', '--threads', '1', '--shapes', '64x256', '--min-seconds', '0.01',
    '--working-set-mb', '8']);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /kernels: (reference|avx2|avx512|neon|neon-dotprod)/);
  t.match(r.stdout, /gemv_q4_0\s+64x256\s+1/);
  t.match(r.stdout, /read_bandwidth/);
});
