// The native boundary: the addon loads, reports the CPU honestly, and rejects bad arguments.
import t from 'tap';
import { cpuInfo, benchKernels } from '../src/index.js';
import { addonPath, loadAddon } from '../src/engine/native.js';

t.test('cpuInfo picks the most capable runnable kernel table', async (t) => {
  const info = cpuInfo();
  t.ok(info.logicalCores >= 1);
  t.ok(info.defaultThreads >= 1 && info.defaultThreads <= 4, 'at most 4 threads by default');
  t.equal(info.runnableKernels[0], 'reference', 'the reference is always runnable');
  t.equal(info.kernels, info.runnableKernels[info.runnableKernels.length - 1]);
  if (info.arch === 'x86_64' && info.features.avx2 && info.features.fma && info.features.f16c) {
    t.equal(info.kernels, info.features.avx512vnni ? 'avx512' : 'avx2');
  }
  if (info.arch === 'aarch64') t.equal(info.kernels, info.features.dotprod ? 'neon-dotprod' : 'neon');
});

t.test('benchKernels runs off the event loop', async (t) => {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const rows = await benchKernels({ threads: [1], shapes: [[128, 1024]], minSeconds: 0.2, workingSetBytes: 8 << 20 });
  clearInterval(timer);
  t.ok(rows.length >= 2);
  t.ok(ticks > 20, `the event loop kept ticking during the benchmark (${ticks} ticks)`);
});

t.test('benchKernels refuses bad options with E_BAD_ARGUMENT', async (t) => {
  await t.rejects(benchKernels({ threads: [0] }), { code: 'E_BAD_ARGUMENT' });
  await t.rejects(benchKernels({ shapes: [[16, -3]] }), { code: 'E_BAD_ARGUMENT' });
  await t.rejects(benchKernels({ shapes: [[16, 48]] }), { code: 'E_BAD_ARGUMENT', message: /multiple of 32 \(the Q4_0 block\)/ });
  await t.rejects(benchKernels({ shapes: [[16, 96]], types: ['Q4_K'] }), { code: 'E_BAD_ARGUMENT', message: /multiple of 256 \(the Q4_K block\)/ });
  await t.rejects(benchKernels({ types: ['F16'] }), { code: 'E_BAD_ARGUMENT', message: /quantized weight type/ });
  await t.rejects(benchKernels({ types: [] }), { code: 'E_BAD_ARGUMENT' });
});

t.test('benchKernels measures the GEMV of each type asked for', async (t) => {
  const rows = await benchKernels({ threads: [1], shapes: [[64, 512]], types: ['Q4_K', 'IQ4_XS'], minSeconds: 0.01, workingSetBytes: 1 << 20 });
  t.same(rows.map((r) => r.name), ['read_bandwidth', 'gemv_q4_k', 'gemv_iq4_xs']);
  for (const r of rows) t.ok(r.gbps > 0, `${r.name}: ${r.gbps} GB/s`);
});

t.test('a missing addon is E_ADDON_MISSING with the fix in the message', async (t) => {
  t.ok(loadAddon(), 'the built addon loads');
  const saved = process.env.EDGELLM_ADDON;
  process.env.EDGELLM_ADDON = '/nonexistent/edgellm.node';
  try {
    t.equal(addonPath(), '/nonexistent/edgellm.node');
    const { loadAddon: fresh } = await t.mockImport<typeof import('../src/engine/native.js')>(
      '../src/engine/native.js');
    let thrown: unknown;
    try {
      fresh();
    } catch (err) {
      thrown = err;
    }
    t.match(thrown, { name: 'EdgeError', code: 'E_ADDON_MISSING', message: /npm run build:native/ });
  } finally {
    if (saved === undefined) delete process.env.EDGELLM_ADDON;
    else process.env.EDGELLM_ADDON = saved;
  }
});

t.test('native errors keep their code; an uncoded one is E_ENGINE', async (t) => {
  const { fromNative } = await import('../src/errors.js');
  const coded = Object.assign(new Error('bad file'), { code: 'E_MODEL_CORRUPT' });
  t.match(fromNative(coded), { name: 'EdgeError', code: 'E_MODEL_CORRUPT', message: 'bad file' });
  t.match(fromNative(new Error('std::bad_alloc')), { code: 'E_ENGINE', message: 'std::bad_alloc' });
  t.match(fromNative('boom'), { code: 'E_ENGINE', message: 'boom' });
});
