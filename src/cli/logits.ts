/**
 * `edgellm logits -m FILE --tokens 1,2,3`: evaluates the tokens in order and prints, for each
 * position, the log-softmax of the next-token distribution over the whole vocabulary.
 * --json: one line {"pos", "token", "logprobs": [...]} per position (for parity checks);
 * otherwise the top 5 per position.
 */
import type { Command } from 'commander';
import { loadModel, logSoftmax } from '../engine/model.js';
import { parsePositiveInt, parseTokenIds } from './args.js';
import { withExamples } from './help.js';
import { collectLora, loadLoraFlags, LORA_FLAG, LORA_HELP, type LoraFlag } from './lora.js';

interface LogitsFlags {
  model: string;
  tokens: string;
  json?: boolean;
  threads?: string;
  lora?: LoraFlag[];
}

export function registerLogits(program: Command): void {
  withExamples(program.command('logits'), [
      ['edgellm logits -m model.gguf --tokens 1,403,407', 'top-5 log-probabilities at each position'],
      ['edgellm logits -m model.gguf --tokens 1,403,407 --json', 'the full vocabulary, one JSON line per position'],
      ['edgellm logits -m model.gguf --tokens 1,403,407 --lora style.gguf:0.5', 'with a LoRA adapter at half strength'],
    ])
    .description('print next-token log-probabilities at every position of a token sequence')
    .requiredOption('-m, --model <file>', 'GGUF model file')
    .requiredOption('--tokens <ids>', 'token ids, comma-separated, e.g. 1,403,407')
    .option('--json', 'one JSON line per position with the full-vocabulary log-probabilities')
    .option('--threads <n>', 'threads (default: physical cores, at most 4)')
    .option(LORA_FLAG, LORA_HELP, collectLora)
    .action(async (flags: LogitsFlags) => {
      const tokens = parseTokenIds('--tokens', flags.tokens);
      const model = await loadModel(flags.model, {
        ...(flags.threads ? { threads: parsePositiveInt('--threads', flags.threads) } : {}),
        contextSize: Math.max(tokens.length, 1),
      });
      try {
        const nVocab = model.info().n_vocab;
        const lora = await loadLoraFlags(model, flags.lora);
        const logits = await model.evalLogits(Int32Array.from(tokens), { allPositions: true, lora });
        for (let pos = 0; pos < tokens.length; pos++) {
          const lp = logSoftmax(logits.subarray(pos * nVocab, (pos + 1) * nVocab));
          if (flags.json) {
            process.stdout.write(JSON.stringify({ pos, token: tokens[pos], logprobs: Array.from(lp) }) + '\n');
          } else {
            const top = Array.from(lp.keys()).sort((a, b) => lp[b]! - lp[a]!).slice(0, 5);
            const cells = top.map((id) => `${id}:${lp[id]!.toFixed(4)}`).join('  ');
            process.stdout.write(`pos ${pos} token ${tokens[pos]}  top5 ${cells}\n`);
          }
        }
      } finally {
        model.close();
      }
    });
}
