/**
 * `edgellm inspect FILE [--context N] [--memory SIZE] [--storage sd|nvme|MB/s] [--json]`: what a
 * model is and whether it fits this device (or one of --memory RAM),
 * from the file's metadata alone (no weights are read). A file with tensor types edgellm does not
 * run is still described: every type is listed, and a `loading:` line names the tensors that
 * block loading and what to do.
 */
import type { Command } from 'commander';
import { basename } from 'node:path';
import {
  describeNeeds,
  deviceMemory,
  deviceOfSize,
  memoryFit,
  modelRequirements,
  residency,
  STORAGE_READ_BYTES_PER_S,
  type Residency,
  type MemoryFit,
  type ModelRequirements,
  type TokenizerStatus,
} from '../engine/requirements.js';
import { parseByteSize, parsePositiveInt, parsePositiveNumber } from './args.js';
import { formatBytes } from './units.js';
import { withExamples } from './help.js';
import { EdgeError } from '../errors.js';

interface InspectFlags {
  context?: string;
  sequences?: string;
  memory?: string;
  storage?: string;
  json?: boolean;
}

export function registerInspect(program: Command): void {
  withExamples(program.command('inspect'), [
      ['edgellm inspect model.gguf', 'architecture, tensor types, memory, fits?'],
      ['edgellm inspect model.gguf --context 2048 --json', 'sized for 2048 positions, as JSON'],
    ])
    .description('show a model\'s architecture, size, tensor types and memory needs, and whether it fits this device')
    .argument('<file>', 'GGUF model file')
    .option('--context <n>', 'positions per sequence to size the KV cache for (default: the model\'s, at most 4096)')
    .option('--sequences <n>', 'sequences decoded at once, each with its KV cache (the daemon\'s batch.max; default 1)')
    .option('--memory <size>', 'judge a device of this much RAM (8G, 16G) instead of this machine')
    .option('--storage <kind>', 'where the file is read from when it does not all fit: sd (80 MB/s), nvme (400 MB/s) or a speed in MB/s', 'sd')
    .option('--json', 'one JSON object instead of text')
    .action((file: string, flags: InspectFlags) => {
      const req = modelRequirements(file, flags.context ? { contextSize: parsePositiveInt('--context', flags.context) } : {});
      const sequences = flags.sequences ? parsePositiveInt('--sequences', flags.sequences) : 1;
      const mem = flags.memory ? deviceOfSize(parseByteSize('--memory', flags.memory)) : deviceMemory();
      // The same sum `edgellm doctor -m FILE` checks.
      const fit = memoryFit(req, mem, sequences);
      const res = residency(req, fit.neededBytes, mem, storageSpeed(flags.storage ?? 'sd'));
      if (flags.json) {
        process.stdout.write(
          JSON.stringify({
            file,
            ...req,
            memory: {
              needed_bytes: fit.neededBytes,
              weight_bytes: fit.weightBytes,
              kv_bytes: fit.kvBytes,
              sequences: fit.sequences,
              scratch_bytes: fit.scratchBytes,
              runtime_bytes: fit.runtimeBytes,
              total_bytes: mem.totalBytes,
              available_bytes: mem.availableBytes,
              source: mem.source,
            },
            fits: fit.verdict === 'fits',
            verdict: fit.verdict,
            residency: res,
            loadable: req.unsupported_tensors.length === 0 && req.tokenizer.status !== 'blocked',
          }) + '\n',
        );
        return;
      }
      const blocked = new Set(req.unsupported_tensors.map((u) => u.type));
      const types = Object.entries(req.tensor_types)
        .sort((a, b) => b[1].bytes - a[1].bytes)
        .map(([t, v]) =>
          `  ${t.padEnd(7)} ${String(v.count).padStart(5)} tensor${v.count === 1 ? ' ' : 's'} ${formatBytes(v.bytes).padStart(10)}` +
          (blocked.has(t) ? '  (edgellm does not run this type)' : ''),
        );
      const kvNote =
        (req.swa_layers > 0 ? ` (${req.swa_layers} of ${req.n_layer} layers sliding-window ${req.sliding_window})` : '') +
        `, ${formatBytes(req.kv_bytes_per_token)} per token` +
        (req.kv_lora_rank > 0
          ? ` (latent attention: ${req.kv_lora_rank} latent + ${req.kv_bytes_per_token / (2 * req.n_layer) - req.kv_lora_rank} rope values per layer, not per-head K and V)`
          : '');
      const lines = [
        `model:         ${basename(file)}${req.name ? ` (${req.name})` : ''}`,
        `architecture:  ${req.arch}${req.n_expert > 0 ? `, ${req.n_expert} experts (${req.n_expert_used} used)` : ''}`,
        `parameters:    ${req.n_params.toLocaleString('en-US')}`,
        `shape:         ${req.n_layer} layers, embedding ${req.n_embd}, ${req.n_head} heads (${req.n_head_kv} KV, head size ${req.head_dim}), FFN ${req.n_ff}, vocabulary ${req.n_vocab}${req.tied_output ? ', tied output' : ''}`,
        req.encoder
          ? `context:       ${req.context_length} tokens per input (an embedding model: ${req.pooling} pooling, no KV cache)`
          : `context:       ${req.context_length} trained; KV cache sized for ${req.context_size}${kvNote}`,
        'tensor types:',
        ...types,
        `tokenizer:     ${tokenizerLine(req.tokenizer)}`,
        `loading:       ${loadingLine(req.unsupported_tensors, req.tokenizer)}`,
        `file size:     ${formatBytes(req.file_size)} (weights ${formatBytes(req.weight_bytes)})`,
        `memory:        ${describeNeeds(fit, req.context_size, formatBytes)}`,
        `device RAM:    ${formatBytes(mem.totalBytes)} total, ${formatBytes(mem.availableBytes)} available${mem.source === 'given' ? ' (--memory, less the OS\'s share)' : ''}`,
        `verdict:       ${verdictLine(fit, mem.availableBytes, mem.totalBytes)}`,
        `residency:     ${residencyLine(res, flags.storage ?? 'sd')}`,
      ];
      process.stdout.write(lines.join('\n') + '\n');
    });
}

function tokenizerLine(tk: TokenizerStatus): string {
  switch (tk.status) {
    case 'ok':
      return `${tk.model === 'spm' ? 'SentencePiece' : tk.model === 'wpm' ? 'WordPiece' : `byte-level BPE, pre-tokenizer ${tk.pre}`}, ${tk.n_tokens} tokens`;
    case 'none':
      return 'none: the model evaluates token ids but cannot take text (generate and serve need a tokenizer)';
    case 'blocked':
      return `${tk.code}: ${tk.message}`;
    case 'unchecked':
      return 'not checked (the tensor types below block loading first)';
  }
}

/**
 * OK, or what blocks loading: the tensors of types edgellm does not run (the first few by name)
 * with the advice for their types, and a tokenizer it cannot build.
 */
function loadingLine(blocking: ModelRequirements['unsupported_tensors'], tk: TokenizerStatus): string {
  const reasons: string[] = [];
  if (blocking.length > 0) {
    const shown = 3;
    const names = blocking.slice(0, shown).map((u) => `'${u.name}'`).join(', ') + (blocking.length > shown ? ` and ${blocking.length - shown} more` : '');
    const byType = [...new Map(blocking.map((u) => [u.type, u.advice])).values()];
    reasons.push(`${blocking.length} tensor${blocking.length === 1 ? '' : 's'} (${names}): ${byType.join('; ')}`);
  }
  if (tk.status === 'blocked') reasons.push('its tokenizer (see tokenizer: above)');
  if (reasons.length === 0) return 'OK: edgellm runs every tensor type in this file';
  return `BLOCKED by ${reasons.join(', and by ')}`;
}

function verdictLine(fit: MemoryFit, available: number, total: number): string {
  const need = formatBytes(fit.neededBytes);
  switch (fit.verdict) {
    case 'fits':
      return `FITS: needs ${need} of ${formatBytes(available)} available`;
    case 'tight':
      return `TIGHT: needs ${need}, only ${formatBytes(available)} available now (${formatBytes(total)} total): free memory or use a smaller --context`;
    case 'too-big':
      return `DOES NOT FIT: needs ${need}, this device has ${formatBytes(total)}: use a smaller quantization or model`;
  }
}

/** --storage: sd, nvme, or a read speed in MB/s (1e6 bytes). */
function storageSpeed(value: string): number {
  if (value in STORAGE_READ_BYTES_PER_S) return STORAGE_READ_BYTES_PER_S[value as keyof typeof STORAGE_READ_BYTES_PER_S];
  if (!/^\s*\d/.test(value)) throw new EdgeError('E_BAD_ARGUMENT', `--storage takes sd, nvme or a read speed in MB/s, got "${value}"`);
  return parsePositiveNumber('--storage', value) * 1e6;
}

function residencyLine(r: Residency, storage: string): string {
  switch (r.verdict) {
    case 'fits-in-ram':
      return 'fits in RAM: every weight stays in memory after its first read';
    case 'runs-from-page-cache': {
      const per = formatBytes(r.storageBytesPerToken);
      return (
        `runs from page cache: ${formatBytes(r.alwaysTouchedBytes)} always read stays in memory, ${formatBytes(r.cachedExpertBytes)} of the ${formatBytes(r.expertBytes)} of experts stay cached;` +
        ` each token reads ${formatBytes(r.expertBytesPerToken)} of experts, about ${per} of it from storage: at most ${r.tokensPerSecondBound!.toFixed(1)} tokens/s from ${storage}`
      );
    }
    case 'does-not-fit':
      return r.expertBytes > 0
        ? `does not fit: the part every token reads (${formatBytes(r.alwaysTouchedBytes)}) is more than the ${formatBytes(r.availableBytes)} available: use a smaller quantization or --context`
        : `does not fit: ${formatBytes(r.alwaysTouchedBytes)} is read for every token and only ${formatBytes(r.availableBytes)} is available: use a smaller quantization or model`;
  }
}
