/**
 * tiktoken rank files ("base64(token bytes) rank" per line, rank = token id) as a byte-level
 * BPE vocabulary. A pair merges when the merged bytes are a token, lowest rank first: the
 * same result as the GGUF merges list that converters derive from these ranks.
 */
import { readFileSync } from 'node:fs';
import { EdgeError } from '../../errors.js';
import { byteToChar } from './unicode.js';

export interface TiktokenSpecials {
  /** Special token text -> id; these are control tokens. */
  tokens: Record<string, number>;
  bos: number;
  eos: number;
  addBos: boolean;
}

/** The special tokens that ship with each model family's rank file. */
export function defaultSpecials(pre: 'llama-bpe' | 'qwen2', rankCount: number): TiktokenSpecials {
  if (pre === 'llama-bpe') {
    // Meta-Llama-3: 256 reserved ids after the ranks.
    const named: Record<number, string> = {
      0: '<|begin_of_text|>',
      1: '<|end_of_text|>',
      6: '<|start_header_id|>',
      7: '<|end_header_id|>',
      9: '<|eot_id|>',
    };
    const tokens: Record<string, number> = {};
    let reserved = 0;
    for (let i = 0; i < 256; i++) {
      const text = named[i] ?? `<|reserved_special_token_${reserved++}|>`;
      tokens[text] = rankCount + i;
    }
    return { tokens, bos: rankCount, eos: rankCount + 1, addBos: true };
  }
  // Qwen2 / Qwen2.5 base vocabulary.
  return {
    tokens: { '<|endoftext|>': rankCount, '<|im_start|>': rankCount + 1, '<|im_end|>': rankCount + 2 },
    bos: rankCount,
    eos: rankCount,
    addBos: false,
  };
}

/** Reads a rank file into GGUF-shaped tokenizer metadata (tokens byte-encoded as GPT-2 characters). */
export function tiktokenMetadata(path: string, pre: 'llama-bpe' | 'qwen2', specials?: TiktokenSpecials): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'latin1');
  } catch (err) {
    throw new EdgeError('E_MODEL_NOT_FOUND', `cannot read tiktoken file ${path}: ${(err as Error).message}`, { cause: err });
  }
  const tokens: string[] = [];
  const lines = text.split('\n');
  for (let ln = 0; ln < lines.length; ln++) {
    const line = lines[ln]!.trim();
    if (line === '') continue;
    const sp = line.indexOf(' ');
    const rank = Number(line.slice(sp + 1));
    if (sp <= 0 || !Number.isInteger(rank) || rank !== tokens.length) {
      throw new EdgeError('E_MODEL_CORRUPT', `${path}:${ln + 1}: expected "base64 rank" with rank ${tokens.length}`);
    }
    const bytes = Buffer.from(line.slice(0, sp), 'base64');
    let s = '';
    for (const b of bytes) s += byteToChar(b);
    tokens.push(s);
  }
  const sp = specials ?? defaultSpecials(pre, tokens.length);
  const types: number[] = new Array<number>(tokens.length).fill(1);
  for (const [t, id] of Object.entries(sp.tokens)) {
    while (tokens.length <= id) {
      tokens.push(`[PAD${tokens.length}]`);
      types.push(5); // unused filler
    }
    tokens[id] = t;
    types[id] = 3; // control
  }
  return {
    'tokenizer.ggml.model': 'gpt2',
    'tokenizer.ggml.pre': pre,
    'tokenizer.ggml.tokens': tokens,
    'tokenizer.ggml.token_type': types,
    'tokenizer.ggml.bos_token_id': sp.bos,
    'tokenizer.ggml.eos_token_id': sp.eos,
    'tokenizer.ggml.add_bos_token': sp.addBos,
  };
}
