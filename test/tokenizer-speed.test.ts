// Encoding speed on ~100 KB of English (the README files of the installed packages): reported,
// with a floor far below what a Raspberry Pi 4 reaches so that only a real regression fails.
import t from 'tap';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ggufTokenizer, requireModels, root, tiktokenTokenizer } from './fixtures/tokenizer-data.js';
import type { Tokenizer } from '../src/engine/tokenizer/index.js';

const TARGET = 100 * 1024;

function englishText(): string {
  let text = '';
  const dir = join(root, 'node_modules');
  for (const pkg of readdirSync(dir).sort()) {
    const readme = join(dir, pkg, 'README.md');
    if (existsSync(readme)) text += readFileSync(readme, 'utf8');
    if (text.length >= TARGET) break;
  }
  while (text.length < TARGET) text += readFileSync(join(root, 'README.md'), 'utf8');
  return text.slice(0, TARGET);
}

function measure(tk: Tokenizer, text: string): { tokens: number; firstPerSec: number; warmPerSec: number } {
  let t0 = performance.now();
  const tokens = tk.encode(text).length;
  const first = performance.now() - t0;
  let warm = Infinity;
  for (let i = 0; i < 3; i++) {
    t0 = performance.now();
    tk.encode(text);
    warm = Math.min(warm, performance.now() - t0);
  }
  return { tokens, firstPerSec: (tokens / first) * 1000, warmPerSec: (tokens / warm) * 1000 };
}

t.test('encoding 100 KB of English is fast for every tokenizer kind', async (t) => {
  if (!requireModels(t, 'tokenizer speed')) return;
  const text = englishText();
  const kinds: Array<[string, () => Tokenizer]> = [
    ['SPM (llama-spm, 32K)', () => ggufTokenizer('vocab/ggml-vocab-llama-spm.gguf')],
    ['BPE (gpt-2, 50K)', () => ggufTokenizer('vocab/ggml-vocab-gpt-2.gguf')],
    ['BPE (llama-3 tiktoken, 128K)', () => tiktokenTokenizer('llama-3.tiktoken')],
    ['BPE (qwen2 tiktoken, 152K)', () => tiktokenTokenizer('qwen.tiktoken')],
  ];
  for (const [name, make] of kinds) {
    const r = measure(make(), text);
    t.comment(
      `${name}: ${r.tokens} tokens from ${text.length} chars; ` +
        `${Math.round(r.firstPerSec / 1000)}K tokens/s first pass, ${Math.round(r.warmPerSec / 1000)}K tokens/s warm`,
    );
    t.ok(r.firstPerSec > 20_000, `${name}: more than 20K tokens/s`);
  }
});
