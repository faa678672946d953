/**
 * `edgellm bench kernels [--types q4_0,q4_k,...]`: GEMV speed per weight type against the measured
 * memory bandwidth.
 * `edgellm bench -m FILE [--n-prompt 512] [-n 128] [--threads N]`: prompt processing (pp) and decode
 * (tg) tokens/s of the forward pass on a model, like llama-bench (whose -p/--n-prompt and -n/--n-gen
 * these are; -p is a prompt's text everywhere in edgellm, so the count is only --n-prompt here).
 */
import { Option, type Command } from 'commander';
import { benchKernels, cpuInfo, type KernelBenchOptions, type KernelBenchRow } from '../index.js';
import { benchModel, type ModelBenchResult } from '../engine/bench-model.js';
import { withStatus } from './progress.js';
import { EdgeError } from '../errors.js';
import { parseIntList, parsePositiveInt, parsePositiveNumber, parseShapes } from './args.js';
import { withExamples } from './help.js';

interface BenchFlags {
  json?: boolean;
  threads?: string;
  shapes?: string;
  types?: string;
  minSeconds?: string;
  workingSetMb?: string;
  model?: string;
  nPrompt?: string;
  nGen?: string;
  /** -p: refused with the flag to use (a count here, a prompt's text in generate). */
  prompt?: string;
  batchSize?: string;
}

/** A whole number >= 0 (--n-prompt 0 / -n 0 skip that test). */
function parseCount(flag: string, value: string): number {
  return value.trim() === '0' ? 0 : parsePositiveInt(flag, value);
}

export function registerBench(program: Command): void {
  const cmd = program
    .command('bench')
    .description('measure speed: `bench kernels` (GEMV per weight type vs. bandwidth) or `bench -m FILE` (pp/tg tokens/s)')
    .argument('[what]', 'kernels (without -m)')
    .option('-m, --model <file>', 'GGUF model: prompt processing and decode speed')
    .option('--n-prompt <n>', 'with -m: prompt tokens prefilled for pp (default 512, 0 skips)')
    .option('-n, --n-gen <n>', 'with -m: tokens decoded one at a time for tg (default 128, 0 skips)')
    .addOption(new Option('-p, --prompt <n>').hideHelp())
    .option('--batch-size <n>', 'with -m: prefill chunk (default 64)')
    .option('--json', 'one JSON object per line instead of a table')
    .option('--threads <list>', 'thread counts to measure, e.g. 1,4 (default: 1 and all cores; with -m: physical cores)')
    .option('--shapes <list>', 'GEMV shapes ROWSxCOLS, e.g. 2048x2048,14336x4096')
    .option('--types <list>', 'weight types whose GEMV to measure, e.g. q4_0,q4_k,q6_k,iq4_xs (default q4_0)')
    .option('--min-seconds <s>', 'time spent per measurement (default 0.5)')
    .option('--working-set-mb <mb>', 'bytes streamed per pass (default: max(1 GiB, 4x the last-level cache))')
    .action(async (what: string | undefined, flags: BenchFlags) => {
      if (flags.prompt !== undefined) {
        throw new EdgeError('E_BAD_ARGUMENT', `bench counts prompt tokens with --n-prompt ${flags.prompt} (-p is a prompt's text in edgellm): see \`edgellm bench --help\``);
      }
      if (flags.model !== undefined) {
        if (what !== undefined && what !== 'model') {
          throw new EdgeError('E_BAD_ARGUMENT', `\`bench ${what}\` does not take -m; use \`edgellm bench -m FILE\``);
        }
        await runModelBench(flags);
        return;
      }
      if (what !== 'kernels') {
        throw new EdgeError(
          'E_BAD_ARGUMENT',
          `unknown benchmark "${what ?? ''}": try \`edgellm bench kernels\` or \`edgellm bench -m FILE\``,
        );
      }
      const opts: KernelBenchOptions = {};
      if (flags.threads) opts.threads = parseIntList('--threads', flags.threads);
      if (flags.shapes) opts.shapes = parseShapes('--shapes', flags.shapes);
      if (flags.types) opts.types = flags.types.split(',').map((t) => t.trim().toUpperCase()).filter((t) => t !== '');
      if (flags.minSeconds) opts.minSeconds = parsePositiveNumber('--min-seconds', flags.minSeconds);
      if (flags.workingSetMb) {
        opts.workingSetBytes = Math.round(parsePositiveNumber('--working-set-mb', flags.workingSetMb) * 1048576);
      }
      const rows = await withStatus(`measuring read bandwidth and ${(opts.types ?? ['Q4_0']).join(', ')} GEMV`, benchKernels(opts));
      if (flags.json) {
        for (const r of rows) process.stdout.write(JSON.stringify(r) + '\n');
      } else {
        process.stdout.write(formatTable(rows));
      }
    });
  withExamples(cmd, [
    ['edgellm bench kernels', 'Q4_0 GEMV GB/s against the measured read bandwidth'],
    ['edgellm bench kernels --types q4_k,q6_k --threads 1,4', 'other weight types, 1 and 4 threads'],
    ['edgellm bench -m model.gguf --n-prompt 128 -n 64 --threads 1,2', "llama-bench's pp/tg tokens/s"],
  ]);
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

async function runModelBench(flags: BenchFlags): Promise<void> {
  const threads = flags.threads ? parseIntList('--threads', flags.threads) : [undefined];
  const promptTokens = flags.nPrompt ? parseCount('--n-prompt', flags.nPrompt) : 512;
  const genTokens = flags.nGen ? parseCount('-n', flags.nGen) : 128;
  const batchSize = flags.batchSize ? parsePositiveInt('--batch-size', flags.batchSize) : undefined;
  const results: ModelBenchResult[] = [];
  for (const n of threads) {
    const r = await withStatus(
      `pp${promptTokens} + tg${genTokens} on ${n ?? 'default'} thread(s)`,
      benchModel(flags.model!, {
        promptTokens,
        genTokens,
        ...(n ? { threads: n } : {}),
        ...(batchSize ? { batchSize } : {}),
      }),
    );
    results.push(r);
    if (flags.json) process.stdout.write(JSON.stringify({ model: flags.model, ...r }) + '\n');
  }
  if (!flags.json) process.stdout.write(formatModelTable(flags.model!, results));
}

/** llama-bench's layout: one row per test and thread count. */
export function formatModelTable(path: string, rows: ModelBenchResult[]): string {
  const first = rows[0]!;
  const lines = [
    `model: ${path} (${first.arch}, ${(first.weight_bytes / 1e6).toFixed(1)} MB of weights, ` +
      `${(first.weight_bytes_per_token / 1e6).toFixed(1)} MB read per decoded token), kernels: ${first.kernels}`,
    'test        threads        t/s   effective GB/s',
  ];
  for (const r of rows) {
    if (r.n_prompt > 0) lines.push(`${('pp' + r.n_prompt).padEnd(11)} ${String(r.threads).padStart(7)} ${r.pp_tps.toFixed(2).padStart(10)}`);
    if (r.n_gen > 0) {
      lines.push(
        `${('tg' + r.n_gen).padEnd(11)} ${String(r.threads).padStart(7)} ${r.tg_tps.toFixed(2).padStart(10)} ${r.effective_gbps.toFixed(2).padStart(16)}`,
      );
    }
  }
  return lines.join('\n') + '\n';
}
