// llama.cpp (node-llama-cpp's prebuilt CPU build) measured the way the speed benchmarks compare
// against: pp = one evaluation of a PROMPT-token prompt, tg = GEN tokens decoded greedily one at a
// time from BOS (node-llama-cpp adds ~0.5 ms per token of its own, measured on stories260K), each
// the best of REPS runs after a warm-up that touches the weights.
//
// Runs as a child process (`node llamacpp-bench.mjs '<json>'`, one JSON line out) so that each
// measurement loads the ggml CPU backend it was asked for: `best` is the one node-llama-cpp picks
// for this CPU (AVX-512 where there is one), `haswell` is its AVX2 build, for a fair comparison
// with EDGELLM_KERNELS=avx2. ggml loads the best libggml-cpu-*.so found beside the addon, so the
// haswell run uses a copy of the prebuilt package that keeps only libggml-cpu-haswell.so
// (haswellTree), and resolves node-llama-cpp from there (node --preserve-symlinks).
import { copyFileSync, existsSync, mkdirSync, readdirSync, symlinkSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repoModules = join(here, '..', '..', 'node_modules');
const PREBUILT = '@node-llama-cpp/linux-x64';

/**
 * A node_modules tree in `dir` where node-llama-cpp's x64 prebuilt package keeps one CPU backend,
 * libggml-cpu-haswell.so (AVX2+FMA+F16C); everything else links to the project's node_modules.
 * Returns the folder to run the child in.
 */
export function haswellTree(dir) {
  const bins = join(repoModules, PREBUILT, 'bins', 'linux-x64');
  if (!existsSync(join(bins, 'libggml-cpu-haswell.so'))) {
    throw new Error(`${bins}/libggml-cpu-haswell.so not found: the AVX2 comparison needs node-llama-cpp's linux-x64 prebuilt package (npm install)`);
  }
  const root = join(dir, 'node_modules');
  mkdirSync(join(root, '@node-llama-cpp'), { recursive: true });
  for (const e of readdirSync(repoModules)) {
    if (e !== '@node-llama-cpp' && !existsSync(join(root, e))) symlinkSync(join(repoModules, e), join(root, e));
  }
  for (const e of readdirSync(join(repoModules, '@node-llama-cpp'))) {
    const to = join(root, '@node-llama-cpp', e);
    if (e !== 'linux-x64' && !existsSync(to)) symlinkSync(join(repoModules, '@node-llama-cpp', e), to);
  }
  const pkg = join(root, PREBUILT);
  mkdirSync(join(pkg, 'bins', 'linux-x64'), { recursive: true });
  copyFileSync(join(repoModules, PREBUILT, 'package.json'), join(pkg, 'package.json'));
  if (!existsSync(join(pkg, 'dist'))) symlinkSync(join(repoModules, PREBUILT, 'dist'), join(pkg, 'dist'));
  // Copies, not links: ggml looks for its backends beside the addon file it was loaded from.
  for (const f of readdirSync(bins)) {
    if (f.startsWith('libggml-cpu-') && f !== 'libggml-cpu-haswell.so') continue;
    copyFileSync(join(bins, f), join(pkg, 'bins', 'linux-x64', f));
  }
  copyFileSync(fileURLToPath(import.meta.url), join(dir, 'llamacpp-bench.mjs'));
  return dir;
}

/**
 * Measures llama.cpp on `path` in a child process: {pp_tps, tg_tps, backend}. cpu: 'best' or a
 * folder made by haswellTree().
 */
export function benchLlamaCppChild({ path, threads, nVocab, prompt, gen, reps, tree }) {
  const script = tree ? join(tree, 'llamacpp-bench.mjs') : fileURLToPath(import.meta.url);
  const nodeArgs = tree ? ['--preserve-symlinks', '--preserve-symlinks-main'] : [];
  const r = spawnSync(process.execPath, [...nodeArgs, script, JSON.stringify({ path: resolve(path), threads, nVocab, prompt, gen, reps })], {
    cwd: tree ?? process.cwd(),
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  });
  if (r.status !== 0) throw new Error(`llama.cpp bench child failed (exit ${r.status}): ${r.stderr.trim().split('\n').slice(-5).join('\n')}`);
  const line = r.stdout.trim().split('\n').pop();
  return JSON.parse(line);
}

async function childMain(spec) {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  let backend = '';
  const llama = await getLlama({
    gpu: false,
    build: 'never',
    logLevel: LlamaLogLevel.debug,
    logger: (_level, message) => {
      const m = /loaded CPU backend from (.*)/.exec(message);
      if (m) backend = m[1].split('/').pop();
      else if (_level === LlamaLogLevel.error || _level === LlamaLogLevel.fatal) process.stderr.write(message + '\n');
    },
  });
  const now = () => performance.now() / 1000;
  const tokens = (n) => Array.from({ length: n }, (_, i) => (i * 7919 + 1) % spec.nVocab);
  try {
    const model = await llama.loadModel({ modelPath: spec.path, gpuLayers: 0 });
    try {
      const ctx = await model.createContext({ contextSize: Math.max(spec.prompt, spec.gen) + 64, batchSize: spec.prompt, threads: spec.threads });
      try {
        const seq = ctx.getSequence();
        await seq.evaluateWithoutGeneratingNewTokens(tokens(8)); // warm-up: first touch of the weights
        let pp = 0, tg = 0;
        for (let rep = 0; rep < spec.reps; rep++) {
          await seq.clearHistory();
          let t0 = now();
          await seq.evaluateWithoutGeneratingNewTokens(tokens(spec.prompt));
          pp = Math.max(pp, spec.prompt / (now() - t0));
          await seq.clearHistory();
          let n = 0;
          t0 = now();
          for await (const _ of seq.evaluate([1], { temperature: 0 })) {
            if (++n >= spec.gen) break;
          }
          tg = Math.max(tg, spec.gen / (now() - t0));
        }
        process.stdout.write(JSON.stringify({ pp_tps: pp, tg_tps: tg, backend }) + '\n');
      } finally {
        await ctx.dispose();
      }
    } finally {
      await model.dispose();
    }
  } finally {
    await llama.dispose();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  childMain(JSON.parse(process.argv[2])).catch((err) => {
    process.stderr.write(`llamacpp-bench: ${err.stack ?? err}\n`);
    process.exit(1);
  });
}
