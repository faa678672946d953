/**
 * The demo model `edgellm serve --demo` serves when no model is configured: a tiny llama (about 1.3 MB)
 * with random weights, written with the GGUF writer into the state directory, so a fresh clone has a
 * working daemon before anyone downloads a GGUF. Its vocabulary is English words, single characters
 * and SentencePiece byte tokens, so every prompt tokenizes and the answers are readable words; their
 * order is random, since nothing was trained. It proves the plumbing (MQTT, queue, cache, streaming),
 * not the model.
 */
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { GgufWriter, meta } from '../engine/gguf-writer.js';
import { EdgeError } from '../errors.js';
import { normalSampler } from '../engine/random.js';

/** The demo model's file name; replies name the model `edgellm-demo`. */
export const DEMO_MODEL_FILE = 'edgellm-demo.gguf';

/** Where the demo model lives in a state directory. */
export const demoModelPath = (stateDir: string) => join(stateDir, 'models', DEMO_MODEL_FILE);

const D = 64; // embedding width
const LAYERS = 4;
const HEADS = 4; // head size 16
const FFN = 192;
const CONTEXT = 1024;
const SEED = 20260601;
/** Dimension 0 of every embedding (see output.weight below). */
const BIAS = 4;
/** Tuned so sampled answers (temperature 0.8) end after a median of about 25 words, greedy ones at 47. */
const EOS_WEIGHT = 1.8;

const WORDS = (
  'the a an and or but if then so because while when where what who which this that these those it its ' +
  'is are was were be been has have had do does did can could will would should may might must not no yes ' +
  'i you he she we they me him her us them my your our their here there now today tomorrow always never ' +
  'machine press spindle motor belt valve pump sensor line cell robot conveyor gear bearing shaft tool ' +
  'batch order part station shift operator plant floor alarm signal temperature pressure speed torque ' +
  'vibration current voltage load cycle time minute hour second degree percent level flow rate limit ' +
  'high low hot cold fast slow new old good bad safe ready stopped running idle open closed full empty ' +
  'check start stop reset clean replace inspect measure report wait send read write move turn hold ' +
  'rises falls holds drops stays runs stops starts needs shows looks seems makes takes gives keeps ' +
  'after before during over under above below near into onto from with without about between against ' +
  'one two three four five ten twelve hundred first last next every each some many more less most ' +
  'water oil air steel metal plastic paper light sound heat power data note list table map story ' +
  'little big small long short bright dark quiet loud warm soft hard green red blue gray white black ' +
  'morning evening night day week year sun rain wind river tree stone house door window road bridge ' +
  'happy tired careful quick gentle brave curious strange simple clear ready steady'
).split(' ');
const PUNCT = ['.', ',', '!', '?', ':', ';', '-', "'", '"', '(', ')', '/', '%', '+', '=', '#', '@', '&', '*', '_'];
const CHARS = [...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789', ...PUNCT];

/** The pieces: <unk> <s> </s>, "▁word" for each word, single characters, "▁", then the 256 byte tokens. */
function vocabulary(): { tokens: string[]; types: number[] } {
  const hex = (i: number) => i.toString(16).toUpperCase().padStart(2, '0');
  const tokens = ['<unk>', '<s>', '</s>', ...[...new Set(WORDS)].map((w) => '▁' + w), '▁', ...CHARS];
  // token_type: 1 normal, 2 unknown, 3 control, 6 byte
  const types: number[] = tokens.map((_, i) => (i === 0 ? 2 : i < 3 ? 3 : 1));
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${hex(b)}>`);
    types.push(6);
  }
  return { tokens, types };
}

/** Writes the demo model to `path` (through `path.tmp`, renamed when complete). */
export function writeDemoModel(path: string): void {
  const { tokens, types } = vocabulary();
  const nVocab = tokens.length;
  const rand = normalSampler(SEED);
  const g = new GgufWriter();
  g.setMeta('general.architecture', meta.string('llama'));
  g.setMeta('general.name', meta.string('edgellm demo (random weights)'));
  g.setMeta('llama.context_length', meta.uint32(CONTEXT));
  g.setMeta('llama.embedding_length', meta.uint32(D));
  g.setMeta('llama.block_count', meta.uint32(LAYERS));
  g.setMeta('llama.feed_forward_length', meta.uint32(FFN));
  g.setMeta('llama.attention.head_count', meta.uint32(HEADS));
  g.setMeta('llama.attention.head_count_kv', meta.uint32(HEADS));
  g.setMeta('llama.attention.layer_norm_rms_epsilon', meta.float32(1e-5));
  g.setMeta('tokenizer.ggml.model', meta.string('llama'));
  g.setMeta('tokenizer.ggml.tokens', meta.array('string', tokens));
  // Words score above characters, so a prompt's whole words merge into them where they can.
  g.setMeta('tokenizer.ggml.scores', meta.array('float32', tokens.map((t, i) => (t.length > 2 ? -i : -1000 - i))));
  g.setMeta('tokenizer.ggml.token_type', meta.array('int32', types));
  g.setMeta('tokenizer.ggml.bos_token_id', meta.uint32(1));
  g.setMeta('tokenizer.ggml.eos_token_id', meta.uint32(2));
  g.setMeta('tokenizer.ggml.unknown_token_id', meta.uint32(0));

  const tensor = (name: string, shape: number[], value: (row: number, col: number) => number) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = value(Math.floor(i / shape[0]!), i % shape[0]!);
    g.addTensor({ name, type: 'F32', shape, data });
  };
  const random = (scale: number) => () => scale * rand();
  const norm = () => 1 + 0.1 * rand();
  // Dimension 0 of every embedding is a constant BIAS, so after the final norm it is a steady positive
  // input: the end-of-text row reads it (and no other row does), which ends answers after a few dozen
  // words on average instead of running to max_tokens.
  tensor('token_embd.weight', [D, nVocab], (_row, col) => (col === 0 ? BIAS : rand()));
  tensor('output_norm.weight', [D], norm);
  // Logits spread 4 nats over the words, end of text and . , ! ?; every other row (unknown, BOS,
  // single characters, bytes) stays 0, so those are (almost) never generated and answers read as words.
  const spoken = new Set(['</s>', '.', ',', '!', '?']);
  const speakable = (id: number) => tokens[id]!.startsWith('▁') ? tokens[id]!.length > 1 : spoken.has(tokens[id]!);
  const eos = 2;
  tensor('output.weight', [D, nVocab], (row, col) =>
    col === 0 ? (row === eos ? EOS_WEIGHT : 0) : speakable(row) ? (4 / Math.sqrt(D)) * rand() : 0,
  );
  for (let l = 0; l < LAYERS; l++) {
    const b = `blk.${l}.`;
    tensor(b + 'attn_norm.weight', [D], norm);
    for (const m of ['attn_q', 'attn_k', 'attn_v', 'attn_output']) tensor(`${b}${m}.weight`, [D, D], random(1 / Math.sqrt(D)));
    tensor(b + 'ffn_norm.weight', [D], norm);
    tensor(b + 'ffn_gate.weight', [D, FFN], random(1 / Math.sqrt(D)));
    tensor(b + 'ffn_up.weight', [D, FFN], random(1 / Math.sqrt(D)));
    tensor(b + 'ffn_down.weight', [FFN, D], random(1 / Math.sqrt(FFN)));
  }
  const tmp = `${path}.tmp`;
  try {
    g.writeFile(tmp);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

/** The demo model's path in `stateDir`, written first if it is not there. */
export function ensureDemoModel(stateDir: string): { path: string; created: boolean } {
  const path = demoModelPath(stateDir);
  if (existsSync(path)) return { path, created: false };
  try {
    mkdirSync(join(stateDir, 'models'), { recursive: true });
    writeDemoModel(path);
  } catch (err) {
    throw new EdgeError('E_CONFIG', `cannot write the demo model to ${path}: ${(err as Error).message}; set state_dir (--state-dir) to a directory you can write`, { cause: err });
  }
  return { path, created: true };
}
