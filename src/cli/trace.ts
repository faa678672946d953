/**
 * `edgellm trace -m FILE -p TEXT [--layers 0,5,-1] [--heads all|0,3] [-n N] --out DIR [--json]`:
 * runs the prompt (and N greedy tokens) through the model once, keeping what the forward pass
 * computes inside, and writes to DIR:
 *   attn-L<l>-H<h>.png   per chosen layer and head, the attention (rows = queries, columns = keys)
 *   attn-L<l>.npy        float32 [heads, T, T], the same probabilities exactly (each row sums to 1)
 *   hidden-L<l>.npy      float32 [T, n_embd], the residual stream after layer l
 *   final-norm.npy       float32 [T, n_embd], the output norm's result (logits = it x output.weight)
 *   index.html           every heatmap with the tokens, self-contained
 *   index.json           the files, their shapes, layers, heads and token texts (--json prints it)
 */
import type { Command } from 'commander';
import { accessSync, constants, mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { withExamples } from './help.js';
import { EdgeError } from '../errors.js';
import { loadModel } from '../engine/model.js';
import { parsePositiveInt } from './args.js';
import { parseNumberFlag } from './generate.js';
import { heatmapHtml, heatmapLayout, heatmapPng } from './heatmap.js';
import { npyFloat32 } from './npy.js';
import { showPiece } from './tokenize.js';

interface TraceFlags {
  model: string;
  prompt: string;
  layers: string;
  heads: string;
  n: string;
  out: string;
  json?: boolean;
  threads?: string;
}

export interface TraceFile {
  file: string;
  kind: 'attention' | 'hidden' | 'final_norm' | 'heatmap';
  layer?: number;
  head?: number;
  /** npy files: the array's shape (float32, C order). */
  shape?: number[];
  /** heatmaps: the image size, the pixels per cell, and where cell (0, 0) starts (cell (q, k) at x0 + k * cell, y0 + q * cell). */
  width?: number;
  height?: number;
  cell?: number;
  x0?: number;
  y0?: number;
}

export interface TraceIndex {
  model: string;
  arch: string;
  prompt: string;
  tokens: Array<{ position: number; id: number; text: string; generated: boolean }>;
  prompt_tokens: number;
  n_layer: number;
  n_head: number;
  n_embd: number;
  layers: number[];
  heads: number[];
  /** Largest |sum p * V - the engine's attention output| over every exported row (a self-check). */
  attention_max_abs_error: number;
  html: string;
  files: TraceFile[];
}

/**
 * "all", or indices like "0,5,-1" into `count` things (negative: from the end), resolved to
 * distinct indices in [0, count). `flag` and `what` ("layers", "heads") name them in errors.
 */
export function parseIndexList(flag: string, value: string, count: number, what: string, model: string): number[] {
  if (value.trim() === 'all') return Array.from({ length: count }, (_, i) => i);
  const out: number[] = [];
  for (const part of value.split(',')) {
    const p = part.trim();
    if (!/^-?\d+$/.test(p)) {
      throw new EdgeError('E_BAD_ARGUMENT', `${flag} takes all or ${what} like 0,5,-1 (negative counts from the end), got "${part}"`);
    }
    const i = Number(p);
    if (i >= count || i < -count) {
      throw new EdgeError(
        'E_BAD_ARGUMENT',
        `${flag}: ${p} is out of range: ${model} has ${count} ${what} (0..${count - 1}, or -${count}..-1 counting from the end)`,
      );
    }
    const r = i < 0 ? count + i : i;
    if (out.includes(r)) throw new EdgeError('E_BAD_ARGUMENT', `${flag} names ${what.replace(/s$/, '')} ${r} twice`);
    out.push(r);
  }
  return out;
}

/** Writes one output file; a failure (disk full, DIR removed meanwhile) names the file and its cause. */
function writeOut(dir: string, file: string, bytes: Buffer | string): void {
  try {
    writeFileSync(join(dir, file), bytes);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new EdgeError('E_BAD_ARGUMENT', `--out ${dir}: writing ${file} failed (${e.code ?? e.message}): free space or give another directory`);
  }
}

/** Creates DIR when needed and proves it writable before any work is done. */
function prepareOutDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true });
    accessSync(dir, constants.W_OK);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new EdgeError('E_BAD_ARGUMENT', `--out ${dir} cannot be written (${e.code ?? e.message}): give a directory you can create and write`);
  }
}

export function registerTrace(program: Command): void {
  const cmd = program
    .command('trace')
    .description('write attention heatmaps (PNG + HTML) and hidden states (.npy) of one prompt, for debugging')
    .requiredOption('-m, --model <file>', 'GGUF model file')
    .requiredOption('-p, --prompt <text>', 'the prompt')
    .option('--layers <list>', 'layers to keep: all, or indices like 0,5,-1 (-1 = the last)', 'all')
    .option('--heads <list>', 'query heads whose attention to draw: all, or indices like 0,3', 'all')
    .option('-n <tokens>', 'greedy tokens to generate after the prompt (traced too)', '0')
    .requiredOption('--out <dir>', 'directory to write into (created when missing)')
    .option('--json', 'print the index (files, shapes, tokens) as JSON')
    .option('--threads <n>', 'threads (default: physical cores, at most 4)')
    .action(async (flags: TraceFlags) => {
      if (flags.prompt.trim() === '') {
        throw new EdgeError('E_BAD_ARGUMENT', '-p/--prompt is empty: give the text to trace, e.g. -p "Once upon a time"');
      }
      const generate = parseNumberFlag('-n', flags.n, 0, 4096, true);
      prepareOutDir(flags.out);
      const name = basename(flags.model);
      const model = await loadModel(flags.model, {
        ...(flags.threads ? { threads: parsePositiveInt('--threads', flags.threads) } : {}),
        maxSequences: 1,
      });
      try {
        const prompt = model.tokenizer.encode(flags.prompt);
        const info = model.info();
        const layers = parseIndexList('--layers', flags.layers, info.n_layer, 'layers', name);
        const heads = parseIndexList('--heads', flags.heads, info.n_head, 'heads', name);
        if (prompt.length + generate > info.context_size) {
          throw new EdgeError(
            'E_PROMPT_TOO_LONG',
            `the prompt (${prompt.length} tokens) and -n ${generate} need ${prompt.length + generate} positions; ${name} holds ${info.context_size}: shorten the prompt or lower -n`,
          );
        }
        const trace = await model.trace(prompt, { layers, heads, generate });
        const T = trace.tokens.length, D = info.n_embd, H = heads.length;
        const tokens = Array.from(trace.tokens, (id, position) => ({
          position,
          id,
          text: showPiece(model.tokenizer.pieceBytes(id)),
          generated: position >= trace.promptTokens,
        }));
        const files: TraceFile[] = [];
        const write = (f: TraceFile, bytes: Buffer | string) => {
          writeOut(flags.out, f.file, bytes);
          files.push(f);
        };
        const labels = { texts: tokens.map((x) => x.text), promptTokens: trace.promptTokens };
        const { cell, x0, y0, width, height } = heatmapLayout(T, labels);
        const maps: Array<{ layer: number; head: number; png: Buffer }> = [];
        for (const lt of trace.layers) {
          write({ file: `attn-L${lt.layer}.npy`, kind: 'attention', layer: lt.layer, shape: [H, T, T] }, npyFloat32(lt.attention, [H, T, T]));
          write({ file: `hidden-L${lt.layer}.npy`, kind: 'hidden', layer: lt.layer, shape: [T, D] }, npyFloat32(lt.hidden, [T, D]));
          heads.forEach((head, hi) => {
            const att = lt.attention.subarray(hi * T * T, (hi + 1) * T * T);
            const file = `attn-L${lt.layer}-H${head}.png`;
            write({ file, kind: 'heatmap', layer: lt.layer, head, width, height, cell, x0, y0 }, heatmapPng(att, T, labels));
            // The page draws its own labels (any script, whole tokens) around the bare grid.
            maps.push({ layer: lt.layer, head, png: heatmapPng(att, T) });
          });
        }
        write({ file: 'final-norm.npy', kind: 'final_norm', shape: [T, D] }, npyFloat32(trace.finalNorm, [T, D]));
        const check = `attention self-check: largest |sum p x V - the engine's attention output| = ${trace.attentionError.toExponential(2)}`;
        writeOut(
          flags.out,
          'index.html',
          heatmapHtml({
            title: `edgellm trace: ${name}`,
            labels: tokens.map((t) => t.text),
            promptTokens: trace.promptTokens,
            notes: [`${info.arch}, ${info.n_layer} layers, ${info.n_head} heads (${info.n_head_kv} KV heads); prompt: ${flags.prompt}`, check],
            maps,
          }),
        );
        const index: TraceIndex = {
          model: flags.model,
          arch: info.arch,
          prompt: flags.prompt,
          tokens,
          prompt_tokens: trace.promptTokens,
          n_layer: info.n_layer,
          n_head: info.n_head,
          n_embd: D,
          layers,
          heads,
          attention_max_abs_error: trace.attentionError,
          html: 'index.html',
          files,
        };
        const json = JSON.stringify(index, null, 2) + '\n';
        writeOut(flags.out, 'index.json', json);
        if (flags.json) process.stdout.write(json);
        else {
          process.stdout.write(
            `traced ${T} tokens (${trace.promptTokens} prompt + ${T - trace.promptTokens} generated), layers ${layers.join(',')} x heads ${heads.join(',')}: ` +
              `${files.length + 2} files in ${flags.out}; open ${join(flags.out, 'index.html')}\n${check}\n`,
          );
        }
      } finally {
        model.close();
      }
    });
  withExamples(cmd, [
    ['edgellm trace -m stories260K.gguf -p "Once upon a time" --out trace/', 'every layer and head: open trace/index.html'],
    ['edgellm trace -m model.gguf -p "The cat sat" --layers 0,-1 --heads 0,3 -n 8 --out t/', 'two layers, two heads, 8 generated tokens'],
    ['edgellm trace -m model.gguf -p "Hello" --layers -1 --out t/ --json', 'print the index of the files written'],
  ]);
}
