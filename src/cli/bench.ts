/** `edgellm bench kernels`: Q4_0 GEMV speed against the measured memory bandwidth. */
import type { Command } from 'commander';
import { benchKernels, cpuInfo, type KernelBenchOptions, type KernelBenchRow } from '../index.js';
import { EdgeError } from '../errors.js';
import { parseIntList, parsePositiveNumber, parseShapes } from './args.js';

interface BenchFlags {
  json?: boolean;
  threads?: string;
  shapes?: string;
  minSeconds?: string;
  workingSetMb?: string;
}

export function registerBench(program: Command): void {
  program
    .command('bench')
    .description('measure speed: `bench kernels` runs the Q4_0 GEMV kernel benchmark')
    .argument('<what>', 'what to measure: kernels')
    .option('--json', 'one JSON object per line instead of a table')
    .option('--threads <list>', 'thread counts to measure, e.g. 1,4 (default: 1 and all cores)')
    .option('--shapes <list>', 'GEMV shapes ROWSxCOLS, e.g. 2048x2048,14336x4096')
    .option('--min-seconds <s>', 'time spent per measurement (default 0.5)')
    .option('--working-set-mb <mb>', 'bytes streamed per pass (default: max(1 GiB, 4x the last-level cache))')
    .action(async (what: string, flags: BenchFlags) => {
      if (what !== 'kernels') {
        throw new EdgeError('E_BAD_ARGUMENT', `unknown benchmark "${what}": try \`edgellm bench kernels\``);
      }
      const opts: KernelBenchOptions = {};
      if (flags.threads) opts.threads = parseIntList('--threads', flags.threads);
      if (flags.shapes) opts.shapes = parseShapes('--shapes', flags.shapes);
      if (flags.minSeconds) opts.minSeconds = parsePositiveNumber('--min-seconds', flags.minSeconds);
      if (flags.workingSetMb) {
        opts.workingSetBytes = Math.round(parsePositiveNumber('--working-set-mb', flags.workingSetMb) * 1048576);
      }
      const rows = await benchKernels(opts);
      if (flags.json) {
        for (const r of rows) process.stdout.write(JSON.stringify(r) + '\n');
      } else {
        process.stdout.write(formatTable(rows));
      }
    });
}

export function formatTable(rows: KernelBenchRow[]): string {
  const cpu = cpuInfo();
  const lines = [
    `cpu: ${cpu.model || cpu.arch}, ${cpu.physicalCores} cores, kernels: ${cpu.kernels}`,
    'kernel          shape          threads    GB/s   read GB/s   ratio',
  ];
  for (const r of rows) {
    const shape = r.name === 'read_bandwidth' ? '-' : `${r.rows}x${r.cols}`;
    lines.push(
      `${r.name.padEnd(15)} ${shape.padEnd(14)} ${String(r.threads).padStart(7)} ${r.gbps.toFixed(2).padStart(7)} ` +
        `${r.peak_gbps.toFixed(2).padStart(11)} ${r.ratio.toFixed(2).padStart(7)}`,
    );
  }
  return lines.join('\n') + '\n';
}
