/**
 * `edgellm quantize IN.gguf OUT.gguf --type q4_0|q8_0 [--threads N] [--force]`: a progress line on
 * a terminal (nothing when stdout is not one), then one summary line.
 */
import type { Command } from 'commander';
import { EdgeError } from '../errors.js';
import { QUANTIZE_TYPES, quantizeModel, type QuantizeProgress, type QuantizeSummary, type QuantizeType } from '../engine/quantize.js';
import { parsePositiveInt } from './args.js';
import { formatBytes } from './units.js';

interface QuantizeFlags {
  type: string;
  threads?: string;
  force?: boolean;
}

export function registerQuantize(program: Command): void {
  program
    .command('quantize')
    .description('write a Q4_0 or Q8_0 copy of a F32/F16/BF16/Q8_0 GGUF model')
    .argument('<input>', 'GGUF model to read')
    .argument('<output>', 'GGUF model to write (written to OUTPUT.tmp, renamed when complete)')
    .requiredOption('--type <type>', `target type: ${QUANTIZE_TYPES.join(' or ')}`)
    .option('--threads <n>', 'chunks converted at once (default: physical cores, at most 4)')
    .option('--force', 'replace the output file if it exists')
    .action(async (input: string, output: string, flags: QuantizeFlags) => {
      const type = flags.type.toLowerCase();
      if (!(QUANTIZE_TYPES as readonly string[]).includes(type)) {
        throw new EdgeError('E_BAD_ARGUMENT', `--type ${flags.type} cannot be written: edgellm quantizes to ${QUANTIZE_TYPES.join(' or ')}`);
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
  const parts = [
    `${s.output}: ${s.type}, ${s.quantized} of ${s.tensors} tensors quantized, ${s.copied} copied as they were`,
  ];
  if (s.outputQ8.length > 0) parts.push(`${s.outputQ8.join(', ')} kept at Q8_0 (no Q6_K in edgellm)`);
  if (s.keptRows.length > 0) {
    const rows = [...new Set(s.keptRows.map((k) => `${k.type} rows of ${k.rowLength}`))].join(', ');
    parts.push(`${s.keptRows.length} left unquantized because their rows are not a multiple of 32 (${rows})`);
  }
  parts.push(
    `${formatBytes(s.inBytes)} -> ${formatBytes(s.outBytes)} in ${s.seconds.toFixed(2)} s (${s.mbPerSecond.toFixed(1)} MB/s)`,
  );
  return parts.join('; ');
}
