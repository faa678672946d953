// The files a user downloads, as llama.cpp's own quantizer writes them (../shared/models/
// llamacpp-quantized: Q4_0 with a Q8_0 output, Q4_K_M with Q4_K, Q6_K, Q5_0 and Q8_0 tensors, made
// by llama_model_quantize from node-llama-cpp's libllama): `edgellm generate` runs them with every
// kernel table this CPU has and gives llama.cpp's own greedy text (recorded in SOURCES.md).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { cpuInfo } from '../src/index.js';
import { assertCliBuilt, cli, requireModel, root } from './fixtures/paths.js';

t.before(assertCliBuilt);

/** llama.cpp's greedy continuation of "Once upon a time" (30 tokens), from ../shared/models/SOURCES.md. */
const LLAMACPP_TEXT: Record<string, string> = {
  'llamacpp-quantized/stories260K-Q4_0.gguf':
    ', there was a little girl named Lily. She loved to play outside in the sun. One day, she',
  'llamacpp-quantized/TinyLLama-v0-Q4_K_M.gguf':
    ', there was a little girl named Lily. She had a big, red ball that she loved to play with. She would run and jump in the',
};

for (const [file, want] of Object.entries(LLAMACPP_TEXT)) {
  t.test(`generate on ${file} gives llama.cpp's greedy text with every kernel table`, async (t) => {
    const path = requireModel(t, file, `${file} generate`);
    if (!path) return;
    // Every kernel table this CPU runs, reference first.
    for (const kernels of cpuInfo().runnableKernels) {
      const r = spawnSync(process.execPath, [cli, 'generate', '-m', path, '-p', 'Once upon a time', '-n', '30', '--temperature', '0'], {
        cwd: root,
        encoding: 'utf8',
        env: { ...process.env, EDGELLM_KERNELS: kernels },
      });
      t.equal(r.status, 0, `${kernels}: ${r.stderr}`);
      t.equal(r.stdout.trimEnd(), want, `${kernels}: the same 30 tokens as llama.cpp`);
    }
  });
}
