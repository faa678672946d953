/**
 * `edgellm generate -m FILE -p TEXT`: streams the model's continuation of TEXT (or, with --chat,
 * its reply to TEXT as a user message) to stdout as it is generated. Ctrl-C stops it cleanly.
 * On a terminal, stderr shows loading and a summary line; piped, only the text is written.
 */
import type { Command } from 'commander';
import { EdgeError } from '../errors.js';
import type { GenerateRequest } from '../engine/generate.js';
import { loadModel } from '../engine/model.js';
import { parsePositiveInt } from './args.js';

interface GenerateFlags {
  model: string;
  prompt: string;
  n: string;
  temperature?: string;
  topP?: string;
  topK?: string;
  seed?: string;
  threads?: string;
  context?: string;
  chat?: boolean;
}

/** A number flag in [lo, hi]; E_BAD_ARGUMENT naming the flag otherwise. */
export function parseNumberFlag(flag: string, value: string, lo: number, hi: number, whole = false): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < lo || n > hi || (whole && !Number.isInteger(n))) {
    const what = whole ? 'a whole number' : 'a number';
    throw new EdgeError('E_BAD_ARGUMENT', `${flag} takes ${what} from ${lo} to ${hi}, got "${value}"`);
  }
  return n;
}

/** The sampling flags shared by generate and profile, as request fields. */
export function samplingFlags(flags: { temperature?: string; topP?: string; topK?: string; seed?: string }): Partial<GenerateRequest> {
  return {
    ...(flags.temperature !== undefined ? { temperature: parseNumberFlag('--temperature', flags.temperature, 0, 100) } : {}),
    ...(flags.topP !== undefined ? { top_p: parseNumberFlag('--top-p', flags.topP, 0, 1) } : {}),
    ...(flags.topK !== undefined ? { top_k: parseNumberFlag('--top-k', flags.topK, 0, 2 ** 31 - 1, true) } : {}),
    ...(flags.seed !== undefined ? { seed: parseNumberFlag('--seed', flags.seed, 0, Number.MAX_SAFE_INTEGER, true) } : {}),
  };
}

export function registerGenerate(program: Command): void {
  program
    .command('generate')
    .description('stream a model\'s continuation of a prompt (or, with --chat, its reply) to stdout')
    .requiredOption('-m, --model <file>', 'GGUF model file')
    .requiredOption('-p, --prompt <text>', 'the prompt')
    .option('-n <tokens>', 'most tokens to generate', '128')
    .option('--temperature <t>', 'sampling temperature, 0 = greedy (default 0.8)')
    .option('--top-p <p>', 'nucleus sampling threshold in (0, 1] (default 0.95)')
    .option('--top-k <k>', 'keep the k most likely tokens, 0 = all (default 40)')
    .option('--seed <s>', 'random seed (default: a random one, printed on a terminal)')
    .option('--threads <n>', 'threads (default: physical cores, at most 4)')
    .option('--context <n>', 'context size in tokens (default: the model\'s, at most 4096)')
    .option('--chat', 'send the prompt as a user message through the model\'s chat template')
    .action(async (flags: GenerateFlags) => {
      const request: GenerateRequest = {
        ...(flags.chat ? { messages: [{ role: 'user', content: flags.prompt }] } : { prompt: flags.prompt }),
        max_tokens: parsePositiveInt('-n', flags.n),
        ...samplingFlags(flags),
      };
      const tty = process.stderr.isTTY === true;
      if (tty) process.stderr.write(`loading ${flags.model}...\r`);
      const model = await loadModel(flags.model, {
        ...(flags.threads ? { threads: parsePositiveInt('--threads', flags.threads) } : {}),
        ...(flags.context ? { contextSize: parsePositiveInt('--context', flags.context) } : {}),
        maxSequences: 1,
      });
      if (tty) process.stderr.write('\x1b[2K');
      const ac = new AbortController();
      const onSigint = () => ac.abort();
      process.once('SIGINT', onSigint);
      try {
        const gen = model.generate({ ...request, signal: ac.signal });
        for await (const chunk of gen) process.stdout.write(chunk);
        const r = await gen.result;
        process.stdout.write('\n');
        if (tty) {
          process.stderr.write(
            `[${r.finish_reason}: ${r.usage.prompt_tokens} prompt + ${r.usage.completion_tokens} generated tokens, ` +
              `${r.timings.decode_tokens_per_s.toFixed(1)} tokens/s, seed ${r.sampling.seed}]\n`,
          );
        }
      } finally {
        process.removeListener('SIGINT', onSigint);
        model.close();
      }
    });
}
