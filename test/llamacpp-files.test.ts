// The files a user downloads, as llama.cpp's own quantizer writes them (../shared/models/
// llamacpp-quantized: Q4_0 with a Q8_0 output; Q4_K_M with Q4_K, Q6_K, Q5_0 and Q8_0 tensors; made
// by llama_model_quantize from node-llama-cpp's libllama):
// - along llama.cpp's own greedy path (30 tokens after "Once upon a time", llama.cpp run here
//   through node-llama-cpp), edgellm's next-token argmax is llama.cpp's at every step;
// - with every kernel table this CPU runs, `edgellm generate` writes the text llama.cpp's completion API gave (SOURCES.md), as far as the
//   first near-tie: TinyLLama-v0-Q4_K_M has one after "red ball" ('.' vs 'that', ~0.45 vs ~0.20
//   in both engines, which llama.cpp's completion path tips the other way).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { getLlama, LlamaLogLevel, type Llama, type Token } from 'node-llama-cpp';
import { cpuInfo } from '../src/index.js';
import { loadModel } from '../src/engine/model.js';
import { assertCliBuilt, cli, requireModel, root } from './fixtures/paths.js';

t.before(assertCliBuilt);

let llama: Llama | undefined;
t.before(async () => {
  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
});
t.teardown(async () => {
  await llama?.dispose();
});

const STEPS = 30;

/** llama.cpp's greedy path from the prompt: the prompt's token ids and the STEPS tokens it chose. */
async function llamaCppGreedy(path: string): Promise<{ prompt: number[]; tokens: number[] }> {
  const model = await llama!.loadModel({ modelPath: path, gpuLayers: 0 });
  try {
    const prompt = Array.from(model.tokenize('Once upon a time', true)) as number[];
    const ctx = await model.createContext({ contextSize: 128, threads: 2 });
    try {
      const seq = ctx.getSequence();
      const tokens: number[] = [];
      let input: Parameters<typeof seq.controlledEvaluate>[0] = prompt.map((tok, i) =>
        i === prompt.length - 1 ? [tok as Token, { generateNext: { token: true } }] : (tok as Token),
      );
      for (let s = 0; s < STEPS; s++) {
        const out = await seq.controlledEvaluate(input);
        const next = out[out.length - 1]?.next.token;
        if (next === undefined || next === null) throw new Error(`llama.cpp gave no token at step ${s}`);
        tokens.push(next);
        input = [[next, { generateNext: { token: true } }]];
      }
      return { prompt, tokens };
    } finally {
      await ctx.dispose();
    }
  } finally {
    await model.dispose();
  }
}

/** edgellm's argmax after each position of ids (this process's kernel table). */
async function edgellmArgmax(path: string, ids: number[]): Promise<number[]> {
  const model = await loadModel(path, { threads: 2, contextSize: 128 });
  try {
    const V = model.info().n_vocab;
    const logits = await model.evalLogits(Int32Array.from(ids), { allPositions: true });
    const out: number[] = [];
    for (let p = 0; p < ids.length; p++) {
      let best = 0;
      for (let i = 1; i < V; i++) if (logits[p * V + i]! > logits[p * V + best]!) best = i;
      out.push(best);
    }
    return out;
  } finally {
    model.close();
  }
}

const FILES: Record<string, string> = {
  'llamacpp-quantized/stories260K-Q4_0.gguf':
    ', there was a little girl named Lily. She loved to play outside in the sun. One day, she',
  'llamacpp-quantized/TinyLLama-v0-Q4_K_M.gguf': ', there was a little girl named Lily. She had a big, red ball',
};

for (const [file, text] of Object.entries(FILES)) {
  t.test(`${file}: edgellm follows llama.cpp's greedy path and generate writes llama.cpp's text, with every kernel table`, async (t) => {
    const path = requireModel(t, file, `${file}`);
    if (!path) return;
    const { prompt, tokens } = await llamaCppGreedy(path);
    const ids = [...prompt, ...tokens.slice(0, -1)];
    const ours = (await edgellmArgmax(path, ids)).slice(prompt.length - 1);
    t.same(ours, tokens, `the default table (${cpuInfo().kernels}) picks llama.cpp's token at each of ${STEPS} steps`);
    for (const kernels of cpuInfo().runnableKernels) {
      const r = spawnSync(process.execPath, [cli, 'generate', '-m', path, '-p', 'Once upon a time', '-n', String(STEPS), '--temperature', '0'], {
        cwd: root,
        encoding: 'utf8',
        env: { ...process.env, EDGELLM_KERNELS: kernels },
      });
      t.equal(r.status, 0, `${kernels}: ${r.stderr}`);
      t.ok(r.stdout.startsWith(text), `${kernels}: generate wrote ${JSON.stringify(r.stdout)}`);
    }
  });
}
