// Tokenizer encode speed: prints tokens/s for each tokenizer kind on ~100 KB of this repository's
// own prose and code (deterministic for a given checkout). A benchmark, not a test: numbers only.
// Usage: npm run build && node scripts/bench-tokenizer.mjs [--models DIR]
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from '../dist/engine/tokenizer/index.js';
import { readGgufInfo } from '../dist/engine/gguf.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const argIdx = process.argv.indexOf('--models');
const models = argIdx > 0 ? resolve(process.argv[argIdx + 1]) : resolve(root, '..', 'shared', 'models');
if (!existsSync(models)) {
  console.error(`bench-tokenizer: ${models} not found; pass --models DIR (the shared test models)`);
  process.exit(1);
}

function corpus(limit) {
  let text = '';
  const walk = (dir) => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (/\.(md|ts|cpp|h)$/.test(name) && text.length < limit) text += readFileSync(p, 'utf8');
    }
  };
  for (const d of ['README.md', 'docs', 'src', 'native/src']) {
    const p = join(root, d);
    if (statSync(p).isDirectory()) walk(p);
    else text += readFileSync(p, 'utf8');
  }
  return text.slice(0, limit);
}

const text = corpus(100 * 1024);
const kinds = [
  ['SPM (llama-spm, 32K)', () => Tokenizer.fromMetadata(readGgufInfo(join(models, 'vocab/ggml-vocab-llama-spm.gguf')).metadata)],
  ['BPE (gpt-2, 50K)', () => Tokenizer.fromMetadata(readGgufInfo(join(models, 'vocab/ggml-vocab-gpt-2.gguf')).metadata)],
  ['BPE (llama-3 tiktoken, 128K)', () => Tokenizer.fromTiktoken(join(models, 'vocab/llama-3.tiktoken'), { pre: 'llama-bpe' })],
  ['BPE (qwen2 tiktoken, 152K)', () => Tokenizer.fromTiktoken(join(models, 'vocab/qwen.tiktoken'), { pre: 'qwen2' })],
];
console.log(`corpus: ${text.length} chars`);
for (const [name, make] of kinds) {
  const tk = make();
  let t0 = performance.now();
  const n = tk.encode(text).length;
  const first = performance.now() - t0;
  t0 = performance.now();
  tk.encode(text);
  const warm = performance.now() - t0;
  // tokens per millisecond = thousands of tokens per second
  console.log(`${name.padEnd(30)} ${String(n).padStart(7)} tokens  first pass ${Math.round(n / first)}K tok/s  warm ${Math.round(n / warm)}K tok/s`);
}
