// `edgellm doctor`: every check says ok, warn or fail with a fix, and a failure is exit 1.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  checkBroker,
  checkClock,
  checkCores,
  checkDisk,
  checkMemory,
  checkUpstream,
  formatChecks,
  runDoctor,
  type DoctorCheck,
} from '../src/cli/doctor.js';
import { cpuInfo, type CpuInfo } from '../src/index.js';
import { memoryFit, RUNTIME_BYTES, type ModelRequirements } from '../src/engine/requirements.js';
import { cli, modelsDir, requireModel, root, run as runCli } from './fixtures/paths.js';

const stories = resolve(modelsDir, 'stories260K.gguf');
const GiB = 1024 ** 3;

/** The CLI as a child process, asynchronously: the test's own servers must keep answering. */
function run(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const child = spawn(process.execPath, [cli, 'doctor', ...args], { cwd: root });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (status) => res({ status, stdout, stderr }));
  });
}

async function listening(server: Server | ReturnType<typeof createHttpServer>): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

/** A port nothing listens on: bound once, then closed. */
async function closedPort(): Promise<number> {
  const s = createServer();
  const port = await listening(s);
  await new Promise((r) => s.close(r));
  return port;
}

const byName = (checks: DoctorCheck[], name: string) => checks.find((c) => c.name === name);

t.test('a model fits when weights + KV per sequence + scratch + runtime fit in RAM', async (t) => {
  const req = { weight_bytes: 2 * GiB, kv_bytes_per_sequence: 256 * 1024 ** 2, scratch_bytes: 1000, n_vocab: 10 } as ModelRequirements;
  const need = 3 * GiB + 1040 + RUNTIME_BYTES;
  const mem = (total: number, available: number) => ({ totalBytes: total, availableBytes: available, source: 'os' as const });
  t.match(memoryFit(req, mem(8 * GiB, 6 * GiB), 4), { verdict: 'fits', neededBytes: need, kvBytes: GiB, sequences: 4 });
  t.match(memoryFit(req, mem(8 * GiB, 3 * GiB), 4), { verdict: 'tight', neededBytes: need }, 'fits the machine, not what is free now');
  t.match(memoryFit(req, mem(3 * GiB, 3 * GiB), 4), { verdict: 'too-big', neededBytes: need }, 'more than the machine has');
  t.equal(memoryFit(req, mem(8 * GiB, 8 * GiB)).neededBytes, 2.25 * GiB + 1040 + RUNTIME_BYTES, 'KV scales with sequences (default 1)');
});

t.test('the clock fails before 2024 and warns when NTP has not synchronized', async (t) => {
  t.equal(checkClock(new Date('1970-01-01T00:00:10Z'), undefined).status, 'fail');
  t.match(checkClock(new Date('2023-12-31T23:59:59Z'), true).fix, /timedatectl set-ntp true/);
  t.equal(checkClock(new Date('2025-06-01T00:00:00Z'), false).status, 'warn');
  t.equal(checkClock(new Date('2025-06-01T00:00:00Z'), true).status, 'ok');
  t.match(checkClock(new Date('2025-06-01T00:00:00Z'), undefined).detail, /NTP status unknown/);
});

t.test('memory under 2 GiB warns; disk space is measured on the nearest existing parent', async (t) => {
  t.equal(checkMemory({ totalBytes: 1 * GiB, availableBytes: 0.5 * GiB, source: 'os' }).status, 'warn');
  t.equal(checkMemory({ totalBytes: 8 * GiB, availableBytes: 6 * GiB, source: 'os' }).status, 'ok');
  const d = checkDisk(join(tmpdir(), 'edgellm-does-not-exist', 'state'));
  t.not(d.status, 'skip');
  t.match(d.detail, /not created yet/);
});

t.test('the broker check connects over TCP and names host:port when it cannot', async (t) => {
  const server = createServer((s) => s.end());
  const port = await listening(server);
  t.teardown(() => server.close());
  const ok = await checkBroker(`mqtt://127.0.0.1:${port}`, 2000);
  t.equal(ok.status, 'ok', ok.detail);
  const down = await checkBroker(`mqtt://127.0.0.1:${await closedPort()}`, 2000);
  t.equal(down.status, 'fail');
  t.match(down.detail, /ECONNREFUSED/);
  t.match(down.fix, /broker/);
  t.equal((await checkBroker('not a url', 100)).status, 'fail');
  t.match((await checkBroker('gopher://host', 100)).detail, /unknown scheme/);
});

t.test('the upstream check passes only on a 2xx from <url>/models, the key sent as the daemon sends it', async (t) => {
  const seen: Array<{ url: string; auth: string | undefined }> = [];
  const server = createHttpServer((req, res) => {
    seen.push({ url: req.url ?? '', auth: req.headers.authorization });
    if (req.url === '/v1/models') {
      res.statusCode = req.headers.authorization === undefined || req.headers.authorization === 'Bearer good' ? 200 : 401;
      res.end('{"object":"list","data":[]}');
    } else if (req.url === '/locked/models') {
      res.statusCode = 401;
      res.end();
    } else {
      res.statusCode = 404;
      res.end('not found');
    }
  });
  const port = await listening(server);
  t.teardown(() => server.close());
  const base = `http://127.0.0.1:${port}`;
  const ok = await checkUpstream(`${base}/v1`, 2000);
  t.equal(ok.status, 'ok', ok.detail);
  t.match(ok.detail, `GET ${base}/v1/models answered HTTP 200`);
  t.same(seen.pop(), { url: '/v1/models', auth: undefined });
  t.equal((await checkUpstream(`${base}/v1/`, 2000)).status, 'ok', 'a trailing slash is the same base');

  const notFound = await checkUpstream(base, 2000);
  t.equal(notFound.status, 'fail', 'a 404 is not a working upstream');
  t.match(notFound.detail, `GET ${base}/models answered HTTP 404`);
  t.match(notFound.fix, `it usually ends in /v1: try ${base}/v1`);

  const { Secret } = await import('../src/secret.js');
  t.equal((await checkUpstream(`${base}/v1`, 2000, new Secret('good'))).status, 'ok');
  t.equal(seen.pop()?.auth, 'Bearer good', 'the configured key is sent');
  const refused = await checkUpstream(`${base}/v1`, 2000, new Secret('bad'));
  t.equal(refused.status, 'fail');
  t.match(refused.fix, /refuses the API key/);
  t.match((await checkUpstream(`${base}/locked`, 2000)).fix, /wants an API key: set upstream\.api_key_file/);

  const down = await checkUpstream(`http://127.0.0.1:${await closedPort()}/v1`, 2000);
  t.equal(down.status, 'fail');
  t.match(down.detail, /ECONNREFUSED/);
  const cliRun = await run(['--upstream', base, '--state-dir', tmpdir()]);
  t.equal(cliRun.status, 1, 'doctor --upstream URL answering 404 fails (exit 1)');
  t.match(cliRun.stdout, /^fail  upstream  GET .*\/models answered HTTP 404$/m);
});

t.test('doctor -m FILE and inspect FILE print the same memory figures, for the same context', async (t) => {
  const path = requireModel(t, 'TinyLLama-v0-Q4_0.gguf', 'doctor/inspect agreement');
  if (!path) return;
  const memoryLine = (text: string) => /(\S+ \S+ = weights .* \+ runtime \S+ \S+)/.exec(text)?.[1];
  const inspected = runCli(['inspect', path]);
  t.equal(inspected.status, 0, inspected.stderr);
  const doctored = await run(['-m', path, '--state-dir', tmpdir()]);
  const a = memoryLine(inspected.stdout);
  t.ok(a, inspected.stdout);
  t.equal(memoryLine(doctored.stdout), a, 'the same sum and parts');
  // TinyLLama-v0 was trained on 2048 positions: both size the KV cache for them and say so.
  t.match(a, /KV cache 4\.00 MiB \(1 sequence of 2048 positions\)/);
  const withContext = [runCli(['inspect', path, '--context', '512', '--sequences', '4']).stdout, (await run(['-m', path, '--context', '512', '--sequences', '4', '--state-dir', tmpdir()])).stdout];
  t.equal(memoryLine(withContext[1]!), memoryLine(withContext[0]!), '--context and --sequences agree too');
  t.match(memoryLine(withContext[0]!), /KV cache 4\.00 MiB \(4 sequences of 512 positions\)/);
});

t.test('the text report puts a fix under each warn and fail', async (t) => {
  const text = formatChecks([
    { name: 'cpu', status: 'ok', detail: 'fine', fix: 'unused' },
    { name: 'clock', status: 'fail', detail: '1970', fix: 'set the time' },
  ]);
  t.equal(text, `ok    cpu       fine\nfail  clock     1970\n${' '.repeat(16)}fix: set the time\n`);
});

t.test('runDoctor checks the CPU, cores, memory, disk and clock even with nothing configured', async (t) => {
  const checks = await runDoctor({ stateDir: tmpdir() });
  t.same(checks.map((c) => [c.name, c.status === 'skip']), [
    ['cpu', false], ['cores', false], ['memory', false], ['disk', false],
    ['model', true], ['broker', true], ['upstream', true], ['clock', false],
  ]);
  t.match(byName(checks, 'cpu')?.detail, /kernels: (avx2|avx512|neon|neon-dotprod|reference)/);
});

t.test('a model that does not fit in RAM fails with what to change', { skip: existsSync(stories) ? false : `no ${stories}` }, async (t) => {
  // 260K parameters never exceed RAM; 1e6 sequences of KV cache do.
  const checks = await runDoctor({ model: stories, sequences: 1_000_000, stateDir: tmpdir() });
  const m = byName(checks, 'model');
  t.equal(m?.status, 'fail', m?.detail ?? 'model');
  t.match(m?.fix, /smaller model|shorter context|fewer sequences/);
});

t.test('doctor --json with a reachable broker and a model that fits exits 0', { skip: existsSync(stories) ? false : `no ${stories}` }, async (t) => {
  const server = createServer((s) => s.end());
  const port = await listening(server);
  t.teardown(() => server.close());
  const r = await run(['--json', '-m', stories, '--broker', `mqtt://127.0.0.1:${port}`, '--state-dir', tmpdir()]);
  const report = JSON.parse(r.stdout) as { ok: boolean; checks: DoctorCheck[] };
  t.same(report.checks.map((c) => c.name), ['cpu', 'cores', 'memory', 'disk', 'model', 'broker', 'upstream', 'clock']);
  t.equal(byName(report.checks, 'model')?.status, 'ok', byName(report.checks, 'model')?.detail ?? 'model');
  t.match(byName(report.checks, 'model')?.detail, /llama.*weights.*KV.*sequence/);
  t.equal(byName(report.checks, 'broker')?.status, 'ok');
  t.equal(byName(report.checks, 'upstream')?.status, 'skip');
  t.ok(report.checks.every((c) => ['ok', 'warn', 'fail', 'skip'].includes(c.status)));
  t.equal(report.ok, true, r.stdout);
  t.equal(r.status, 0, r.stderr);
});

t.test('doctor reads the config file and exits 1 naming what failed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-doctor-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const config = join(dir, 'config.yaml');
  const port = await closedPort();
  writeFileSync(config, `model: ${join(dir, 'missing.gguf')}\nstate_dir: ${dir}\nbroker:\n  url: mqtt://127.0.0.1:${port}\n`);
  const r = await run(['--config', config, '--timeout-ms', '2000']);
  t.equal(r.status, 1);
  t.match(r.stdout, /^fail  model     E_MODEL_NOT_FOUND/m);
  t.match(r.stdout, new RegExp(`^fail  broker    127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`, 'm'));
  t.match(r.stdout, /^ {16}fix: start the broker/m);
  t.equal(r.stderr.trim(), 'edgellm doctor: 2 check(s) failed: model, broker', 'one line on stderr, no usage hint');
});

t.test('doctor refuses a bad flag value and an unreadable config', async (t) => {
  const bad = await run(['--sequences', '0']);
  t.equal(bad.status, 2);
  t.match(bad.stderr, /--sequences takes a positive whole number/);
  const missing = await run(['--config', '/nonexistent/config.yaml']);
  t.equal(missing.status, 2);
  t.match(missing.stderr, /E_CONFIG: cannot read the config file \/nonexistent\/config.yaml/);
});

t.test('doctor reads its config through the daemon\'s schema: a key serve would refuse is refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-doctor-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const config = join(dir, 'config.yaml');
  writeFileSync(config, `state_dir: ${dir}
batch:
  max: 4
  max_wait: 20
`);
  const r = await run(['--config', config]);
  t.equal(r.status, 2);
  t.match(r.stderr, /E_CONFIG: .*batch\.max_wait/);
});

t.test('the cores check reports the default thread count and the reason the runtime gives for it', async (t) => {
  const cpu = cpuInfo();
  const c = checkCores();
  t.ok(cpu.defaultThreadsReason.length > 0, cpu.defaultThreadsReason);
  t.match(c.detail, `${cpu.usableCpus} usable by this process, model threads default ${cpu.defaultThreads} (${cpu.defaultThreadsReason})`);
  t.ok(cpu.defaultThreads >= 1 && cpu.defaultThreads <= Math.min(4, cpu.usableCpus), `${cpu.defaultThreads} of ${cpu.usableCpus}`);
});

t.test('on a 4-core Pi the cores check says why decode gets 3 threads and warns when engine.threads takes all 4; one usable CPU warns', async (t) => {
  const pi: CpuInfo = {
    ...cpuInfo(), arch: 'aarch64', model: 'Cortex-A76', logicalCores: 4, physicalCores: 4, usableCpus: 4, defaultThreads: 3,
    defaultThreadsReason: '3 of 4 usable CPUs: one left to the event loop (MQTT, HTTP); decode is memory-bound, 3 threads read DRAM as fast as 4',
  };
  const ok = checkCores(pi);
  t.equal(ok.status, 'ok');
  t.equal(ok.detail, '4 cores, 4 usable by this process, model threads default 3 (3 of 4 usable CPUs: one left to the event loop (MQTT, HTTP); decode is memory-bound, 3 threads read DRAM as fast as 4)');
  const all = checkCores(pi, 4);
  t.equal(all.status, 'warn', 'engine.threads 4 on 4 usable CPUs');
  t.match(all.detail, /; engine\.threads 4$/);
  t.match(all.fix ?? '', /takes every usable CPU.*default \(3\)/);
  t.equal(checkCores(pi, 3).status, 'ok');
  t.equal(checkCores({ ...pi, physicalCores: 2, usableCpus: 2, defaultThreads: 2 }, 2).status, 'ok', '2 of 2: leaving one would halve prefill');
  const quota = checkCores({ ...pi, usableCpus: 1, defaultThreads: 1, defaultThreadsReason: '1 of 1 usable CPUs: every usable CPU' });
  t.equal(quota.status, 'warn');
  t.match(quota.fix ?? '', /CPUQuota/);
});
