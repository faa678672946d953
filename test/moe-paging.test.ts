// Decode of a random MoE whose file is larger than a memory limit (a memory cgroup, as systemd's
// MemoryMax= sets on a device): the engine sees the limit, leaves the experts paged, and decodes
// the same tokens as without the limit, with no OOM kill. The control run repacks every expert
// into private memory (EDGELLM_REPACK=force with paging off), which the limit must OOM-kill: that
// is how the test knows the limit was enforced at all.
//
// A third run repacks Q4_0 as the neon-dotprod table does at load (EDGELLM_REPACK=force, on the
// reference kernels, x86's only table with a GEMM over repacked Q4_0) with the experts paged:
// they must be left alone, or the limit kills it as it kills the control run.
//
// A memory cgroup needs root and a writable memory controller (cgroup v2 with memory enabled, or
// v1's memory hierarchy). Where there is none (a container with /sys/fs/cgroup read-only, a user
// account) the test cannot run: a loud skip locally, a failure under CI=true (CI runs as root on a
// VM whose memory controller is writable). Where there is one, it is expected to work: a cgroup
// that cannot be created or a limit that is not enforced fails under CI=true too.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { root, skipOrFail } from './fixtures/paths.js';

const MiB = 1024 ** 2;
const LIMIT_MIB = 160;

/** Why a memory cgroup cannot be made here, or undefined when one is expected to work. */
function cgroupUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux: no memory cgroups';
  if (process.getuid?.() !== 0) return 'not root: creating a memory cgroup needs root';
  const mounts = readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' '));
  const rw = (dir: string) => mounts.some((m) => m[1] === dir && (m[3] ?? '').split(',').includes('rw'));
  for (const dir of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']) {
    const controllers = join(dir, 'cgroup.controllers');
    if (existsSync(controllers) && readFileSync(controllers, 'utf8').split(/\s+/).includes('memory')) {
      return rw(dir) ? undefined : `${dir} (cgroup v2 with memory) is mounted read-only`;
    }
  }
  if (existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes')) {
    return rw('/sys/fs/cgroup/memory') ? undefined : '/sys/fs/cgroup/memory (cgroup v1) is mounted read-only';
  }
  return 'no memory cgroup controller is mounted';
}

interface Run {
  status: number | null;
  signal: string | null;
  completion_tokens?: number;
  decode_tokens_per_s?: number;
  major_faults?: number;
  read_bytes?: number;
  experts_paged?: boolean;
  same_text?: boolean;
  peak_bytes?: number;
  oom_kills?: number;
  stderr: string;
}

t.test(`a random MoE larger than a ${LIMIT_MIB} MiB memory cgroup decodes the unlimited run's tokens with its experts paged and no OOM kill`, (t) => {
  const why = cgroupUnavailable();
  if (why) {
    skipOrFail(t, {
      ciFailure: `CI runs as root with a writable memory cgroup controller, which this test needs: ${why}`,
      skipped: `${why}; the MoE-under-a-memory-limit test did not run`,
      pass: 'skipped: no memory cgroup can be made here',
      stderr: true,
    });
    t.end();
    return;
  }
  const r = spawnSync(
    process.execPath,
    [join(root, 'scripts/moe-paging.mjs'), '--json', '--layers', '4', '--limit-mib', String(LIMIT_MIB), '--tokens', '16', '--threads', '2', '--runs', 'unlimited,paged,repack-paged,repack-pinned'],
    { encoding: 'utf8', cwd: root },
  );
  if (r.status !== 0) {
    skipOrFail(t, {
      ciFailure: `a memory cgroup was expected to work here (root, a writable controller) but scripts/moe-paging.mjs failed: ${r.stderr.slice(-1000)}`,
      skipped: `scripts/moe-paging.mjs could not set a memory limit: ${r.stderr.slice(-1000)}`,
      pass: 'skipped: the memory cgroup could not be made',
      stderr: true,
    });
    t.end();
    return;
  }
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { cgroup: string; file_bytes: number; limit_bytes: number; results: Record<string, Run> };
  const { unlimited, paged, 'repack-paged': repacked, 'repack-pinned': pinned } = out.results as Record<'unlimited' | 'paged' | 'repack-paged' | 'repack-pinned', Run>;
  t.comment(`cgroup ${out.cgroup}: file ${(out.file_bytes / MiB).toFixed(0)} MiB, limit ${LIMIT_MIB} MiB`);
  t.comment(`paged: ${paged.decode_tokens_per_s?.toFixed(1)} tok/s, ${paged.major_faults} major faults, ${((paged.read_bytes ?? 0) / MiB).toFixed(0)} MiB read, peak ${((paged.peak_bytes ?? NaN) / MiB).toFixed(0)} MiB`);
  t.ok(out.file_bytes > out.limit_bytes * 1.5, 'the file is well over the limit');

  const enforced = pinned.signal === 'SIGKILL' && (pinned.oom_kills ?? 0) >= 1;
  if (!enforced) {
    skipOrFail(t, {
      ciFailure: `the ${LIMIT_MIB} MiB limit was not enforced (every expert repacked into private memory was not OOM-killed: ${JSON.stringify(pinned)})`,
      skipped: `the ${LIMIT_MIB} MiB memory limit is not enforced here (the control run was not OOM-killed); the paged run proves nothing`,
      pass: 'skipped: the memory limit is not enforced here',
      stderr: true,
    });
    t.end();
    return;
  }
  t.pass('the limit is enforced: every expert pinned in private memory is OOM-killed');

  t.equal(unlimited.status, 0, unlimited.stderr);
  t.equal(paged.status, 0, `the paged run exits normally: ${paged.stderr}`);
  t.equal(paged.signal, null);
  t.equal(paged.oom_kills, 0, 'no OOM kill under the limit');
  t.equal(paged.experts_paged, true, 'the engine saw the cgroup limit and paged the experts');
  t.equal(unlimited.experts_paged, false, 'without the limit the experts are not paged');
  t.equal(paged.completion_tokens, 16);
  t.equal(paged.same_text, true, 'the same tokens as the unlimited run');
  // What the neon-dotprod table does at load (repack Q4_0), on the reference kernels here: the
  // paged experts are left as the file stores them, so the same limit holds the rest.
  t.equal(repacked.status, 0, `repacking the rest leaves the paged experts alone: ${repacked.stderr}`);
  t.equal(repacked.oom_kills, 0, 'no OOM kill with Q4_0 repacked outside the experts');
  t.equal(repacked.completion_tokens, 16);
  if (paged.peak_bytes !== undefined && Number.isFinite(paged.peak_bytes)) t.ok(paged.peak_bytes <= out.limit_bytes, 'peak usage within the limit');
  t.end();
});
