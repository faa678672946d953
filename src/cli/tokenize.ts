/** `edgellm tokenize -m FILE -- TEXT`: the token ids a model's tokenizer gives TEXT (as llama.cpp would). */
import type { Command } from 'commander';
import { EdgeError } from '../errors.js';
import { readGgufInfo } from '../engine/gguf.js';
import { Tokenizer } from '../engine/tokenizer/index.js';
import { withExamples } from './help.js';

interface TokenizeFlags {
  model?: string;
  bos: boolean;
  parseSpecial?: boolean;
  json?: boolean;
}

export function registerTokenize(program: Command): void {
  withExamples(program.command('tokenize'), [
      ['edgellm tokenize -m model.gguf -- "Hello world"', 'ids and pieces'],
      ['edgellm tokenize -m model.gguf --json --no-bos -- "Hello"', 'ids as one JSON array, without BOS'],
      ['edgellm tokenize -m model.gguf --parse-special -- "<|im_start|>user"', 'special-token text as its tokens'],
    ])
    .description("print the token ids of TEXT under a model's tokenizer (one id<TAB>piece line each)")
    .option('-m, --model <file>', 'GGUF model (or vocabulary) file')
    .option('--no-bos', 'do not add the BOS token the model asks for')
    .option('--parse-special', 'turn special-token text such as <s> or <|im_start|> into those tokens')
    .option('--json', 'print the ids as one JSON array')
    .argument('<text...>', 'the text; put it after -- so that it may start with a dash')
    .action((words: string[], flags: TokenizeFlags) => {
      if (!flags.model) throw new EdgeError('E_BAD_ARGUMENT', '-m/--model FILE is required: the GGUF file whose tokenizer to use');
      const tokenizer = Tokenizer.fromMetadata(readGgufInfo(flags.model).metadata);
      const ids = tokenizer.encode(words.join(' '), { addBos: flags.bos ? undefined : false, parseSpecial: flags.parseSpecial });
      if (flags.json) {
        process.stdout.write(JSON.stringify(ids) + '\n');
        return;
      }
      process.stdout.write(ids.map((id) => `${id}\t${showPiece(tokenizer.pieceBytes(id))}\n`).join(''));
    });
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** A token's bytes on one line: control characters and bytes that are not whole characters escaped. */
export function showPiece(bytes: Uint8Array): string {
  let text: string;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    return Array.from(bytes, (b) => (b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : hex(b))).join('');
  }
  return text.replace(/[\u0000-\u001f\u007f\\]/g, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\t') return '\\t';
    if (c === '\r') return '\\r';
    if (c === '\\') return '\\\\';
    return hex(c.charCodeAt(0));
  });
}

function hex(b: number): string {
  return `\\x${b.toString(16).padStart(2, '0')}`;
}
