/**
 * `edgellm profile -m FILE -p TEXT`: runs the same generation several times and reports
 *   Latency: 124ms (95th percentile: 152ms)     median and p95 of a whole run (submit -> last token)
 *   Memory: Peak 2.1GB (RSS)                     the process's peak resident set
 *   Token Throughput: 18.7 tokens/sec            mean decode rate (tokens after the first, per second)
 * Greedy by default, so every run does the same work. --json prints one object instead.
 * A warm-up run (not counted) first pages the weights in.
 */
import type { Command } from 'commander';
import { EdgeError } from '../errors.js';
import type { GenerateResult } from '../engine/generate.js';
import { loadModel } from '../engine/model.js';
import { parsePositiveInt } from './args.js';
import { MAX_TOKENS_FLAGS, parseNumberFlag, samplingFlags } from './generate.js';
import { withExamples } from './help.js';

const METRICS = ['latency', 'memory', 'token_throughput'] as const;
type Metric = (typeof METRICS)[number];

interface ProfileFlags {
  model: string;
  prompt: string;
  maxTokens: string;
  runs: string;
  warmup: string;
  metrics: string;
  json?: boolean;
  threads?: string;
  temperature?: string;
  seed?: string;
}

export interface ProfileReport {
  model: string;
  runs: number;
  prompt_tokens: number;
  max_tokens: number;
  /** Mean generated tokens per run. */
  completion_tokens: number;
  latency_ms?: { p50: number; p95: number; mean: number; min: number; max: number };
  ttft_ms?: { p50: number; p95: number };
  memory?: { peak_rss_bytes: number };
  token_throughput?: { tokens_per_s: number };
}

/** The q-th quantile (0..1) by nearest rank. */
export function percentile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[rank - 1] ?? 0;
}

function parseMetrics(value: string): Metric[] {
  const list = value.split(',').map((m) => m.trim()).filter(Boolean);
  for (const m of list) {
    if (!(METRICS as readonly string[]).includes(m)) {
      throw new EdgeError('E_BAD_ARGUMENT', `--metrics takes a list of ${METRICS.join(', ')}; "${m}" is not one`);
    }
  }
  if (list.length === 0) throw new EdgeError('E_BAD_ARGUMENT', `--metrics needs at least one of ${METRICS.join(', ')}`);
  return list as Metric[];
}

function formatBytes(bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(1)}GB`;
  return `${Math.round(bytes / 1e6)}MB`;
}

export function registerProfile(program: Command): void {
  const cmd = program
    .command('profile')
    .description('measure latency, peak memory and token throughput over repeated generations')
    .requiredOption('-m, --model <file>', 'GGUF model file')
    .requiredOption('-p, --prompt <text>', 'the prompt')
    .option(MAX_TOKENS_FLAGS, 'most tokens per run', '64')
    .option('--runs <n>', 'measured runs', '5')
    .option('--warmup <n>', 'runs before measuring (not counted)', '1')
    .option('--metrics <list>', `comma-separated: ${METRICS.join(',')}`, METRICS.join(','))
    .option('--json', 'print one JSON object')
    .option('--threads <n>', 'threads (default: physical cores, at most 4)')
    .option('--temperature <t>', 'sampling temperature (default 0: greedy, the same work every run)')
    .option('--seed <s>', 'random seed (default 0)')
    .action(async (flags: ProfileFlags) => {
      const metrics = parseMetrics(flags.metrics);
      const runs = parsePositiveInt('--runs', flags.runs);
      const warmup = parseNumberFlag('--warmup', flags.warmup, 0, 1000, true);
      const maxTokens = parsePositiveInt('-n', flags.maxTokens);
      const request = {
        prompt: flags.prompt,
        max_tokens: maxTokens,
        temperature: 0,
        seed: 0,
        ...samplingFlags(flags),
      };
      const tty = process.stderr.isTTY === true;
      const model = await loadModel(flags.model, {
        ...(flags.threads ? { threads: parsePositiveInt('--threads', flags.threads) } : {}),
        maxSequences: 1,
      });
      const results: GenerateResult[] = [];
      try {
        for (let i = 0; i < warmup + runs; i++) {
          if (tty) process.stderr.write(`\r${i < warmup ? 'warm-up' : 'run'} ${i < warmup ? i + 1 : i - warmup + 1}/${i < warmup ? warmup : runs}  `);
          const r = await model.generate(request).result;
          if (i >= warmup) results.push(r);
        }
      } finally {
        if (tty) process.stderr.write('\r\x1b[2K');
        model.close();
      }
      const total = results.map((r) => r.timings.total_ms);
      const report: ProfileReport = {
        model: flags.model,
        runs,
        prompt_tokens: results[0]!.usage.prompt_tokens,
        max_tokens: maxTokens,
        completion_tokens: results.reduce((s, r) => s + r.usage.completion_tokens, 0) / runs,
      };
      if (metrics.includes('latency')) {
        report.latency_ms = {
          p50: percentile(total, 0.5),
          p95: percentile(total, 0.95),
          mean: total.reduce((s, x) => s + x, 0) / runs,
          min: Math.min(...total),
          max: Math.max(...total),
        };
        const ttft = results.map((r) => r.timings.ttft_ms);
        report.ttft_ms = { p50: percentile(ttft, 0.5), p95: percentile(ttft, 0.95) };
      }
      // maxRSS is in kilobytes (KiB) on Linux and macOS.
      if (metrics.includes('memory')) report.memory = { peak_rss_bytes: process.resourceUsage().maxRSS * 1024 };
      if (metrics.includes('token_throughput')) {
        report.token_throughput = {
          tokens_per_s: results.reduce((s, r) => s + r.timings.decode_tokens_per_s, 0) / runs,
        };
      }
      if (flags.json) {
        process.stdout.write(JSON.stringify(report) + '\n');
        return;
      }
      if (report.latency_ms) {
        process.stdout.write(
          `Latency: ${Math.round(report.latency_ms.p50)}ms (95th percentile: ${Math.round(report.latency_ms.p95)}ms)\n`,
        );
      }
      if (report.memory) process.stdout.write(`Memory: Peak ${formatBytes(report.memory.peak_rss_bytes)} (RSS)\n`);
      if (report.token_throughput) {
        process.stdout.write(`Token Throughput: ${report.token_throughput.tokens_per_s.toFixed(1)} tokens/sec\n`);
      }
    });
  withExamples(cmd, [
    ['edgellm profile -m model.gguf -p "Once upon a time" --runs 5', 'latency, peak memory and tokens/s'],
    ['edgellm profile -m model.gguf -p "Hi" -n 32 --json --metrics latency,memory', 'one JSON object'],
  ]);
}
