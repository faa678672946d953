// `npm run bench:moe-paging`: decode of a random MoE whose file is larger than a memory limit
// (issue #15, "MoE on small RAM"). The limit is a memory cgroup this script creates (root only:
// cgroup v2 with the memory controller, or v1's memory hierarchy), which caps the page cache and
// the process's own memory together, as systemd's MemoryMax= does on a device. Each run drops the
// file from the page cache first (dd iflag=nocache), so its reads are charged to its own cgroup.
//
// Runs, each a child process decoding --tokens tokens greedily after the same prompt:
//   unlimited      no cgroup limit: the reference text, and the file fits in this machine's RAM
//   warm           the same with the file left in the page cache: decode when nothing is read
//   warm-paged     warm, EDGELLM_EXPERT_PAGING=on: what the per-expert hints cost when nothing is read
//   paged          under the limit, the engine's own choice (the limit makes it page the experts)
//   unhinted       under the limit, EDGELLM_EXPERT_PAGING=off: no per-expert hints (before #15)
//   repack-paged   under the limit, EDGELLM_REPACK=force: Q4_0 repacking as the neon-dotprod table
//                  does it, the experts left paged (on the reference kernels, the only x86 table
//                  with a GEMM over repacked Q4_0: its speed is not comparable)
//   repack-pinned  the same with EDGELLM_EXPERT_PAGING=off: every expert repacked into private
//                  memory, which no limit smaller than the file can hold (expect an OOM kill)
// Per run: decode tokens/s (native timings), wall seconds, major faults and bytes read from storage
// during the decode (getrusage, /proc/self/io), the cgroup's peak usage and OOM kills, and whether
// the text equals the unlimited run's.
//
// Runs on the built package (npm run build). Options: --limit-mib N (default 256), --layers N
// (default 16: a 1.0 GB file; 4 layers: 270 MB), --tokens N (default 32), --threads N, --runs a,b
// (default all), --model FILE (reuse a file written before), --json.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const PROMPT = 'Once upon a time';
const MiB = 1024 ** 2;

/** 64 experts of 512 per layer, 4 used per token: 57 MB of experts per layer, 3.5 MB of them read per token. */
const paged = (nLayer) => ({
  name: `MoE 64x4, 1024x${nLayer}, expert ffn 512`, arch: 'llama', nEmbd: 1024, nLayer, nHead: 16, nHeadKv: 4, nFf: 512, nVocab: 32000,
  nExpert: 64, nExpertUsed: 4,
});

if (args[0] === '--child') await child(args[1], Number(args[2]), Number(args[3]) || undefined);
else await main();

/** One decode, measured from inside: the last stdout line is its JSON. */
async function child(model, tokens, threads) {
  const { loadModel } = await import('../dist/index.js');
  const io = () => {
    const m = /^read_bytes: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'));
    return m ? Number(m[1]) : NaN;
  };
  const t0 = performance.now();
  const m = await loadModel(model, { contextSize: 256, ...(threads ? { threads } : {}) });
  const loadS = (performance.now() - t0) / 1000;
  const before = { faults: process.resourceUsage().majorPageFault, read: io(), t: performance.now() };
  const gen = m.generate({ prompt: PROMPT, max_tokens: tokens, temperature: 0 });
  for await (const _ of gen);
  const r = await gen.result;
  const out = {
    text: r.text,
    completion_tokens: r.usage.completion_tokens,
    decode_tokens_per_s: r.timings.decode_tokens_per_s,
    wall_s: (performance.now() - before.t) / 1000,
    load_s: loadS,
    major_faults: process.resourceUsage().majorPageFault - before.faults,
    read_bytes: io() - before.read,
    experts_paged: m.info().experts_paged,
  };
  m.close();
  process.stdout.write(JSON.stringify(out) + '\n');
}

/**
 * The memory cgroup this machine lets root create, or why there is none: v2 (a unified mount
 * whose cgroup.controllers lists memory) first, else v1's memory hierarchy.
 */
function memoryCgroups() {
  for (const mount of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']) {
    const controllers = join(mount, 'cgroup.controllers');
    if (existsSync(controllers) && readFileSync(controllers, 'utf8').split(/\s+/).includes('memory')) {
      return { kind: 'v2', mount, limitFile: 'memory.max', usageFile: 'memory.current', peakFile: 'memory.peak' };
    }
  }
  const v1 = '/sys/fs/cgroup/memory';
  if (existsSync(join(v1, 'memory.limit_in_bytes'))) {
    return { kind: 'v1', mount: v1, limitFile: 'memory.limit_in_bytes', usageFile: 'memory.usage_in_bytes', peakFile: 'memory.max_usage_in_bytes' };
  }
  return { kind: 'none', reason: 'no memory cgroup controller is mounted (neither a v2 mount listing memory nor /sys/fs/cgroup/memory)' };
}

/** Creates a child cgroup limited to `bytes`; throws with the reason when this process may not. */
function createLimitedCgroup(cg, name, bytes) {
  const dir = join(cg.mount, name);
  if (cg.kind === 'v2') {
    // The controller must be enabled for the root's children (it is, on a systemd host).
    const sub = join(cg.mount, 'cgroup.subtree_control');
    if (!readFileSync(sub, 'utf8').split(/\s+/).includes('memory')) writeFileSync(sub, '+memory');
  }
  mkdirSync(dir);
  try {
    writeFileSync(join(dir, cg.limitFile), String(bytes));
    if (cg.kind === 'v2') writeFileSync(join(dir, 'memory.swap.max'), '0');
  } catch (err) {
    rmdirSync(dir);
    throw err;
  }
  const read = (file) => readFileSync(join(dir, file), 'utf8');
  const stat = (key) => Number(new RegExp(`^${key} (\\d+)$`, 'm').exec(cg.kind === 'v2' ? read('memory.events') : read('memory.oom_control'))?.[1] ?? NaN);
  return {
    dir,
    procs: join(dir, 'cgroup.procs'),
    limit: Number(read(cg.limitFile)),
    peak: () => (existsSync(join(dir, cg.peakFile)) ? Number(read(cg.peakFile)) : NaN),
    oomKills: () => stat('oom_kill'),
    remove: () => rmdirSync(dir),
  };
}

/** Evicts the file's pages from the page cache (GNU dd's fadvise DONTNEED over the whole file). */
function dropFromPageCache(file) {
  const r = spawnSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
  if (r.status !== 0) throw new Error(`dd iflag=nocache failed: ${r.stderr}`);
}

/**
 * Runs one child decode, in a fresh cgroup limited to `limitBytes` when given; returns its JSON
 * plus the exit status, the signal that ended it, and the cgroup's peak usage and OOM kills.
 */
function decodeRun(model, { tokens, threads, limitBytes, env = {}, cg, warm = false }) {
  const script = fileURLToPath(import.meta.url);
  const childArgs = [script, '--child', model, String(tokens), String(threads ?? '')];
  if (!warm) dropFromPageCache(model);
  const group = limitBytes ? createLimitedCgroup(cg, `edgellm-moe-paging-${process.pid}-${Date.now()}`, limitBytes) : undefined;
  try {
    const r = group
      ? spawnSync('sh', ['-c', 'echo $$ > "$0" && exec "$@"', group.procs, process.execPath, ...childArgs], { encoding: 'utf8', env: { ...process.env, ...env } })
      : spawnSync(process.execPath, childArgs, { encoding: 'utf8', env: { ...process.env, ...env } });
    const last = r.stdout.trim().split('\n').pop() ?? '';
    let result;
    try {
      result = JSON.parse(last);
    } catch {
      result = undefined;
    }
    return { ...result, status: r.status, signal: r.signal, stderr: r.stderr.slice(-2000), peak_bytes: group?.peak(), oom_kills: group?.oomKills(), limit_bytes: group?.limit };
  } finally {
    group?.remove();
  }
}

async function main() {
  const limitBytes = Number(opt('--limit-mib', '256')) * MiB;
  const layers = Number(opt('--layers', '16'));
  const tokens = Number(opt('--tokens', '32'));
  const threads = opt('--threads', '') ? Number(opt('--threads', '')) : undefined;
  const runs = opt('--runs', 'unlimited,warm,paged,unhinted,repack-paged,repack-pinned').split(',');
  const json = args.includes('--json');
  const cg = memoryCgroups();
  if (cg.kind === 'none') throw new Error(`cannot set a memory limit here: ${cg.reason}`);
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-moe-paging-'));
  try {
    let model = opt('--model', '');
    if (!model) {
      const { writeModel } = await import('./lib/bench-models.mjs');
      model = join(dir, 'moe.gguf');
      writeModel(paged(layers), model);
    }
    const fileBytes = statSync(model).size;
    const env = {
      unlimited: {},
      warm: {},
      'warm-paged': { EDGELLM_EXPERT_PAGING: 'on' },
      paged: {},
      unhinted: { EDGELLM_EXPERT_PAGING: 'off' },
      'repack-paged': { EDGELLM_REPACK: 'force', EDGELLM_KERNELS: 'reference' },
      'repack-pinned': { EDGELLM_REPACK: 'force', EDGELLM_KERNELS: 'reference', EDGELLM_EXPERT_PAGING: 'off' },
    };
    const results = {};
    let reference;  // the unlimited run's text
    for (const run of runs) {
      results[run] = decodeRun(model, { tokens, threads, limitBytes: run === 'unlimited' || run.startsWith('warm') ? undefined : limitBytes, env: env[run], cg, warm: run.startsWith('warm') });
      if (run === 'unlimited') reference = results[run].text;
      if (reference !== undefined && results[run].text !== undefined) results[run].same_text = results[run].text === reference;
      delete results[run].text;
      if (!json) process.stderr.write(`${run}: ${JSON.stringify(results[run])}\n`);
    }
    const summary = { cgroup: cg.kind, file_bytes: fileBytes, limit_bytes: limitBytes, tokens, results };
    if (json) process.stdout.write(JSON.stringify(summary) + '\n');
    else {
      console.log(`file ${(fileBytes / MiB).toFixed(0)} MiB, cgroup ${cg.kind} limit ${(limitBytes / MiB).toFixed(0)} MiB, ${tokens} tokens`);
      console.log('run            tok/s   wall s  majflt  read MiB  peak MiB  OOM kills  exit   same text  experts paged');
      for (const [run, r] of Object.entries(results)) {
        const f = (v, d = 0, w = 8) => (v === undefined || Number.isNaN(v) ? '-' : Number(v).toFixed(d)).padStart(w);
        console.log(
          `${run.padEnd(14)}${f(r.decode_tokens_per_s, 1)}${f(r.wall_s, 2, 9)}${f(r.major_faults)}${f(r.read_bytes / MiB, 0, 10)}${f(r.peak_bytes / MiB, 0, 10)}` +
          `${f(r.oom_kills, 0, 11)}  ${String(r.signal ?? r.status).padEnd(7)}${String(r.same_text ?? '-').padEnd(11)}${r.experts_paged ?? '-'}`,
        );
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
