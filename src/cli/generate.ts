/**
 * `edgellm generate -m FILE -p TEXT`: streams the model's continuation of TEXT (or, with --chat or
 * --system, its reply to TEXT as a user message) to stdout as it is generated. It stops at -n
 * tokens, a stop string or the end of the context (finish reason "length", noted on stderr).
 * Ctrl-C stops it: what was generated is printed and it exits 130.
 * On a terminal, stderr shows loading and a summary line; piped, only the text is written.
 */
import type { Command } from 'commander';
import { EdgeError } from '../errors.js';
import type { Generation, GenerateRequest } from '../engine/generate.js';
import { loadModel, type Model } from '../engine/model.js';
import { parsePositiveInt } from './args.js';
import { withExamples } from './help.js';
import { Interrupted, interruptSignal } from './interrupt.js';
import { collectLora, loadLoraFlags, LORA_FLAG, LORA_HELP, type LoraFlag } from './lora.js';

interface GenerateFlags {
  model: string;
  prompt: string;
  maxTokens: string;
  temperature?: string;
  topP?: string;
  topK?: string;
  minP?: string;
  seed?: string;
  threads?: string;
  context?: string;
  chat?: boolean;
  system?: string;
  stop?: string[];
  lora?: LoraFlag[];
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
export function samplingFlags(flags: { temperature?: string; topP?: string; topK?: string; minP?: string; seed?: string }): Partial<GenerateRequest> {
  return {
    ...(flags.temperature !== undefined ? { temperature: parseNumberFlag('--temperature', flags.temperature, 0, 100) } : {}),
    ...(flags.topP !== undefined ? { top_p: parseNumberFlag('--top-p', flags.topP, 0, 1) } : {}),
    ...(flags.topK !== undefined ? { top_k: parseNumberFlag('--top-k', flags.topK, 0, 2 ** 31 - 1, true) } : {}),
    ...(flags.minP !== undefined ? { min_p: parseNumberFlag('--min-p', flags.minP, 0, 1) } : {}),
    ...(flags.seed !== undefined ? { seed: parseNumberFlag('--seed', flags.seed, 0, Number.MAX_SAFE_INTEGER, true) } : {}),
  };
}

/** `--stop A --stop B` -> ['A', 'B'] */
export const collect = (value: string, previous: string[] = []) => [...previous, value];

/** -n: the most tokens to generate, the same flag on generate, profile and request. */
export const MAX_TOKENS_FLAGS = '-n, --max-tokens <n>';

/**
 * Starts the generation. An -n beyond what the context has left after the prompt generates to the
 * context's end instead (finish reason "length"), as llama.cpp does; `capped` says so. A prompt that
 * alone fills the context is an E_PROMPT_TOO_LONG in the CLI's words (its flags, not API fields).
 */
function startGeneration(model: Model, request: GenerateRequest, flags: GenerateFlags, signal: AbortSignal): { gen: Generation; capped: boolean } {
  try {
    return { gen: model.generate({ ...request, signal }), capped: false };
  } catch (err) {
    if (!(err instanceof EdgeError) || err.code !== 'E_PROMPT_TOO_LONG') throw err;
  }
  const { max_tokens: _dropped, ...toContextEnd } = request;
  try {
    return { gen: model.generate({ ...toContextEnd, signal }), capped: true };
  } catch (err) {
    if (!(err instanceof EdgeError) || err.code !== 'E_PROMPT_TOO_LONG') throw err;
    const info = model.info();
    const prompt = 'messages' in request
      ? `-p${flags.system !== undefined ? ' with --system' : ''}, through the chat template,`
      : `-p (${model.tokenizer.encode(flags.prompt).length} tokens)`;
    const context = flags.context !== undefined
      ? `--context ${info.context_size}`
      : `the default --context: the model's ${info.context_length}, at most 4096`;
    throw new EdgeError(
      'E_PROMPT_TOO_LONG',
      `${prompt} leaves no room to generate in a context of ${info.context_size} tokens (${context}): ` +
        `shorten the prompt${info.context_size < info.context_length ? `, or raise --context (up to ${info.context_length}, what the model was trained on)` : ''}`,
      { cause: err },
    );
  }
}

export function registerGenerate(program: Command): void {
  const cmd = program
    .command('generate')
    .description('stream a model\'s continuation of a prompt (or, with --chat, its reply) to stdout')
    .requiredOption('-m, --model <file>', 'GGUF model file')
    .requiredOption('-p, --prompt <text>', 'the prompt')
    .option(MAX_TOKENS_FLAGS, 'most tokens to generate; stops earlier at the end of the context', '128')
    .option('--temperature <t>', 'sampling temperature, 0 = greedy (default 0.8)')
    .option('--top-p <p>', 'nucleus sampling threshold in (0, 1] (default 0.95)')
    .option('--top-k <k>', 'keep the k most likely tokens, 0 = all (default 40)')
    .option('--min-p <p>', 'drop tokens less likely than p x the most likely one, 0 = off (default 0.05)')
    .option('--seed <s>', 'random seed (default: a random one, printed on a terminal)')
    .option('--stop <text>', 'stop before this text, which is not printed (repeat for more)', collect)
    .option('--threads <n>', 'threads (default: as edgellm doctor reports, e.g. 3 on a 4-core Pi)')
    .option('--context <n>', 'context size in tokens, prompt + answer (default: the model\'s, at most 4096)')
    .option('--chat', 'send the prompt as a user message through the model\'s chat template')
    .option('--system <text>', 'a system message before -p (implies --chat)')
    .option(LORA_FLAG, LORA_HELP, collectLora)
    .action(async (flags: GenerateFlags) => {
      const chat = flags.chat === true || flags.system !== undefined;
      const request: GenerateRequest = {
        ...(chat
          ? { messages: [...(flags.system !== undefined ? [{ role: 'system' as const, content: flags.system }] : []), { role: 'user' as const, content: flags.prompt }] }
          : { prompt: flags.prompt }),
        max_tokens: parsePositiveInt('-n', flags.maxTokens),
        ...samplingFlags(flags),
        ...(flags.stop !== undefined ? { stop: flags.stop } : {}),
      };
      if (flags.stop?.includes('')) throw new EdgeError('E_BAD_ARGUMENT', '--stop takes some text, got ""');
      const threads = flags.threads ? parsePositiveInt('--threads', flags.threads) : undefined;
      const contextSize = flags.context ? parsePositiveInt('--context', flags.context) : undefined;
      const tty = process.stderr.isTTY === true;
      if (tty) process.stderr.write(`loading ${flags.model}...\r`);
      const model = await loadModel(flags.model, {
        ...(threads ? { threads } : {}),
        ...(contextSize ? { contextSize } : {}),
        maxSequences: 1,
      });
      if (tty) process.stderr.write('\x1b[2K');
      // Ctrl-C cancels the generation (finish reason "cancelled"); the text so far is printed.
      const interrupted = interruptSignal();
      try {
        const lora = await loadLoraFlags(model, flags.lora);
        if (lora.length > 0) request.lora = lora;
        const { gen, capped } = startGeneration(model, request, flags, interrupted);
        for await (const chunk of gen) process.stdout.write(chunk);
        const r = await gen.result;
        process.stdout.write('\n');
        const contextSize = model.info().context_size;
        if (r.finish_reason === 'length' && capped) {
          // Always said, piped too: the answer is shorter than -n asked for.
          process.stderr.write(
            `edgellm: stopped at the end of the context (finish reason length): ${r.usage.prompt_tokens} prompt + ` +
              `${r.usage.completion_tokens} generated = ${contextSize} tokens, fewer than -n ${request.max_tokens}; raise --context for more\n`,
          );
        }
        if (tty) {
          process.stderr.write(
            `[${r.finish_reason}: ${r.usage.prompt_tokens} prompt + ${r.usage.completion_tokens} generated tokens, ` +
              `${r.timings.decode_tokens_per_s.toFixed(1)} tokens/s, seed ${r.sampling.seed}]\n`,
          );
        }
        if (r.finish_reason === 'cancelled' && interrupted.aborted) throw new Interrupted();
      } finally {
        model.close();
      }
    });
  withExamples(cmd, [
    ['edgellm generate -m model.gguf -p "Once upon a time" -n 64 --temperature 0', 'greedy: the same text every run'],
    ['edgellm generate -m model.gguf -p "Tell me a joke" --system "You are terse." --stop "\\n\\n"', 'a chat reply, cut at a blank line'],
    ['edgellm generate -m model.gguf -p "Story:" -n 4096 --context 4096 --lora tone.gguf:0.5', 'as long as the context allows, with a LoRA adapter at half strength'],
  ]);
}
