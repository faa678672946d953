/**
 * `edgellm embed -m FILE TEXT...`: each text's embedding from an encoder model (bert, nomic-bert),
 * pooled as the file says and L2-normalized.
 * --json: one line {"index", "text", "tokens", "embedding": [...]} per text (the whole vector);
 * otherwise a summary per text (token count, dimensions, the first and last values) and, for two
 * or more texts, their cosine similarities.
 */
import type { Command } from 'commander';
import { withExamples } from './help.js';
import { loadModel } from '../engine/model.js';
import { parsePositiveInt } from './args.js';

interface EmbedFlags {
  model: string;
  json?: boolean;
  threads?: string;
}

/** Values shown at each end of a vector in the summary. */
const SHOWN = 4;

export function registerEmbed(program: Command): void {
  const cmd = program
    .command('embed')
    .description('print the embedding of each text from an embedding model (bert, nomic-bert)')
    .requiredOption('-m, --model <file>', 'GGUF embedding model file')
    .argument('<text...>', 'one or more texts, each embedded on its own')
    .option('--json', 'one JSON line per text with the whole vector')
    .option('--threads <n>', 'threads (default: physical cores, at most 4)')
    .action(async (texts: string[], flags: EmbedFlags) => {
      const model = await loadModel(flags.model, {
        ...(flags.threads ? { threads: parsePositiveInt('--threads', flags.threads) } : {}),
      });
      try {
        const vectors: Float32Array[] = [];
        for (const [index, text] of texts.entries()) {
          const tokens = text.length > 0 ? model.tokenizer.encode(text).length : 0;
          const v = await model.embed(text);
          vectors.push(v);
          if (flags.json) {
            process.stdout.write(JSON.stringify({ index, text, tokens, embedding: Array.from(v) }) + '\n');
          } else {
            process.stdout.write(`[${index}] ${tokens} tokens -> ${v.length} dims  ${summary(v)}  ${JSON.stringify(clip(text))}\n`);
          }
        }
        if (!flags.json && vectors.length > 1) {
          process.stdout.write(`cosine similarity (${model.info().pooling} pooling):\n`);
          for (let i = 0; i < vectors.length; i++) {
            const row = vectors.map((w) => dot(vectors[i]!, w).toFixed(4).padStart(8)).join('');
            process.stdout.write(`[${i}]${row}\n`);
          }
        }
      } finally {
        model.close();
      }
    });
  withExamples(cmd, [
    ['edgellm embed -m bge-small-en-v1.5-q8_0.gguf "the spindle overheats"', 'one vector: its size and ends'],
    ['edgellm embed -m bge-small.gguf "pump A failed" "pump A broke down" "lunch menu"', 'three vectors and their cosine similarities'],
    ['edgellm embed -m bge-small.gguf --json "first text" "second text"', 'one JSON line per text with the whole vector'],
  ]);
}

function summary(v: Float32Array): string {
  const fmt = (x: number) => x.toFixed(4);
  if (v.length <= 2 * SHOWN) return `[${Array.from(v, fmt).join(', ')}]`;
  return `[${Array.from(v.subarray(0, SHOWN), fmt).join(', ')}, ..., ${Array.from(v.subarray(-SHOWN), fmt).join(', ')}]`;
}

function clip(text: string): string {
  return text.length > 40 ? text.slice(0, 37) + '...' : text;
}

/** The vectors are unit length: their dot product is their cosine. */
function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}
