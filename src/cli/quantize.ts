/**
 * `edgellm quantize IN.gguf OUT.gguf --type q4_k_m|q4_0|... [--threads N] [--force]
 * [--allow-requantize]`: a progress line on a terminal (nothing when stdout is not one), then one
 * summary line.
 */
import type { Command } from 'commander';
import { EdgeError } from '../errors.js';
import { QUANTIZE_TYPES, quantizeModel, type QuantizeProgress, type QuantizeSummary, type QuantizeType } from '../engine/quantize.js';
import { parsePositiveInt } from './args.js';
import { formatBytes } from './units.js';
import { withExamples } from './help.js';

interface QuantizeFlags {
  type: string;
  threads?: string;
  force?: boolean;
  allowRequantize?: boolean;
}

export function registerQuantize(program: Command): void {
  withExamples(program.command('quantize'), [
      ['edgellm quantize model-f16.gguf model-q4_0.gguf --type q4_0', 'the fastest type on a Pi'],
      ['edgellm quantize model-f16.gguf model-q4_k_m.gguf --type q4_k_m --threads 4', 'llama.cpp\'s Q4_K_M mix'],
    ])
    .description('write a copy of a F32/F16/BF16 GGUF model in one of llama.cpp\'s quantization mixes, with its per-tensor rules')
    .argument('<input>', 'GGUF model to read')
    .argument('<output>', 'GGUF model to write (written to OUTPUT.tmp, renamed when complete)')
    .requiredOption('--type <type>', `the mix, as llama-quantize names it: ${QUANTIZE_TYPES.join(', ')}`)
    .option('--threads <n>', 'chunks converted at once (default: physical cores, at most 4)')
    .option('--force', 'replace the output file if it exists')
    .option('--allow-requantize', 'convert tensors that are already quantized (loses accuracy: quantize the F16/F32 original if you have it)')
    .action(async (input: string, output: string, flags: QuantizeFlags) => {
      const type = flags.type.toLowerCase();
      if (!(QUANTIZE_TYPES as readonly string[]).includes(type)) {
        throw new EdgeError('E_BAD_ARGUMENT', `--type ${flags.type} cannot be written: edgellm quantizes to ${QUANTIZE_TYPES.join(', ')}`);
      }
      const tty = process.stdout.isTTY === true;
      let last = 0;
      const onProgress = (p: QuantizeProgress) => {
        const now = performance.now();
        if (now - last < 100 && p.bytesDone < p.bytesTotal) return;
        last = now;
        process.stdout.write(`\r\x1b[K${progressLine(p)}`);
      };
      const summary = await quantizeModel(input, output, {
        type: type as QuantizeType,
        ...(flags.threads ? { threads: parsePositiveInt('--threads', flags.threads) } : {}),
        ...(flags.force ? { force: true } : {}),
        ...(flags.allowRequantize ? { allowRequantize: true } : {}),
        ...(tty ? { onProgress } : {}),
      });
      if (tty) process.stdout.write('\r\x1b[K');
      process.stdout.write(summaryLine(summary) + '\n');
    });
}

function progressLine(p: QuantizeProgress): string {
  const width = 24;
  const filled = Math.round((p.bytesDone / Math.max(p.bytesTotal, 1)) * width);
  const mbs = p.bytesDone / 1e6 / Math.max(p.seconds, 1e-9);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] tensor ${p.tensor}/${p.tensors} ${p.name}  ${mbs.toFixed(1)} MB/s`;
}

export function summaryLine(s: QuantizeSummary): string {
  const types = Object.entries(s.types)
    .sort((a, b) => b[1] - a[1])
    .map(([type, n]) => `${n} ${type}`)
    .join(', ');
  const parts = [
    `${s.output}: ${s.type} (file type ${s.fileType}), ${s.quantized} of ${s.tensors} tensors quantized, ${s.copied} copied as they were (${types})`,
  ];
  if (s.fallbacks.length > 0) {
    const kinds = [...new Set(s.fallbacks.map((f) => `${f.wanted} -> ${f.type} for rows of ${f.rowLength}`))].join(', ');
    parts.push(`${s.fallbacks.length} fell back because their rows are not whole blocks (${kinds})`);
  }
  parts.push(
    `${formatBytes(s.inBytes)} -> ${formatBytes(s.outBytes)} in ${s.seconds.toFixed(2)} s (${s.mbPerSecond.toFixed(1)} MB/s)`,
  );
  return parts.join('; ');
}
