/**
 * `edgellm doctor`: is this machine ready to serve? Each check says ok, warn or fail, and what to
 * do about it. A failure means the daemon would not work as configured (exit 1); a warning means
 * it would work, slower or with less margin.
 */
import { CommanderError, type Command } from 'commander';
import { spawnSync } from 'node:child_process';
import { existsSync, statfsSync } from 'node:fs';
import { loadConfig, readUpstreamSecret } from '../config.js';
import { embeddedBrokerUrl } from '../transport/mqtt/embedded-broker.js';
import { connect } from 'node:net';
import { dirname, resolve } from 'node:path';
import { cpuInfo, type CpuInfo } from '../index.js';
import { describeNeeds, deviceMemory, memoryFit, modelRequirements, type DeviceMemory } from '../engine/requirements.js';
import { EdgeError } from '../errors.js';
import type { Secret } from '../secret.js';
import { parsePositiveInt } from './args.js';
import { formatBytes } from './units.js';
import { withExamples } from './help.js';

export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface DoctorCheck {
  name: string;
  status: CheckStatus;
  /** What was found, in one line. */
  detail: string;
  /** What to do about a warn or fail. */
  fix?: string;
}

export interface DoctorOptions {
  /** GGUF model to check against this machine's memory. */
  model?: string;
  /** Sequences decoded at once (batch.max): each holds its own KV cache. */
  sequences?: number;
  /** Positions per sequence (default: the model's context, at most 4096, as loadModel). */
  contextSize?: number;
  /** mqtt://host[:port] (also mqtts, ws, wss, tcp). */
  broker?: string;
  /** The config has no broker.url: serve runs its own broker at this URL (nothing to check over the network). */
  embeddedBroker?: string;
  /** The OpenAI-compatible upstream's base URL, as upstream.url (…/v1). */
  upstream?: string;
  /** Its API key (from the config's upstream.api_key_file or the systemd credential). */
  upstreamKey?: Secret;
  /** Where the database and models live. */
  stateDir?: string;
  /** Per network check. */
  timeoutMs?: number;
  /** engine.threads of the config, when it sets one. */
  threads?: number;
}

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

const fmt = (bytes: number) => (bytes >= GiB ? `${(bytes / GiB).toFixed(1)} GiB` : `${Math.round(bytes / MiB)} MiB`);

export function checkCpu(): DoctorCheck {
  const cpu = cpuInfo();
  const what = `${cpu.arch}${cpu.model ? ` (${cpu.model})` : ''}, kernels: ${cpu.kernels}`;
  if (cpu.arch === 'aarch64' && !cpu.features.dotprod) {
    return {
      name: 'cpu', status: 'warn', detail: `${what}, no dotprod (ARMv8.0, e.g. Pi 4's Cortex-A72)`,
      fix: 'quantized matmuls run without SDOT, roughly half as fast; a Pi 5 (Cortex-A76) has dotprod',
    };
  }
  if (cpu.kernels === 'reference') {
    return { name: 'cpu', status: 'warn', detail: `${what}: no SIMD kernels for this CPU`, fix: 'expect slow generation; edgellm has NEON and AVX2 fast paths' };
  }
  return { name: 'cpu', status: 'ok', detail: `${what}${cpu.features.dotprod ? ', dotprod' : ''}` };
}

/**
 * The CPUs, the default model thread count with its reason, and engine.threads when the config sets
 * it: a pool that takes every one of 3 or more usable CPUs warns, since the daemon's event loop then
 * competes with the decode for a CPU (docs/raspberry-pi.md, "Threads").
 */
export function checkCores(cpu: CpuInfo = cpuInfo(), threads?: number): DoctorCheck {
  const usable = cpu.usableCpus;
  let detail = `${cpu.physicalCores} cores, ${usable} usable by this process, model threads default ${cpu.defaultThreads} (${cpu.defaultThreadsReason})`;
  if (threads !== undefined) detail += `; engine.threads ${threads}`;
  if (usable < 2) {
    return { name: 'cores', status: 'warn', detail, fix: 'one usable CPU: raise CPUQuota= (install-offline.sh --cpu-quota) or the cpuset' };
  }
  if (threads !== undefined && threads >= usable && usable >= 3) {
    return {
      name: 'cores', status: 'warn', detail,
      fix: `engine.threads ${threads} takes every usable CPU: the event loop (MQTT, HTTP) preempts decode threads; ` +
        `drop engine.threads for the default (${cpu.defaultThreads}): decode is memory-bound and loses nothing`,
    };
  }
  return { name: 'cores', status: 'ok', detail };
}

export function checkMemory(mem: DeviceMemory = deviceMemory()): DoctorCheck {
  const detail = `${fmt(mem.totalBytes)} RAM, ${fmt(mem.availableBytes)} available`;
  if (mem.totalBytes < 2 * GiB) {
    return { name: 'memory', status: 'warn', detail, fix: 'under 2 GiB: only the smallest models (about 1B parameters at Q4_0) fit' };
  }
  return { name: 'memory', status: 'ok', detail };
}

/** The nearest existing directory at or above path (the state dir may not exist before install). */
function existingAncestor(path: string): string {
  let p = resolve(path);
  while (!existsSync(p) && dirname(p) !== p) p = dirname(p);
  return p;
}

export function checkDisk(stateDir: string): DoctorCheck {
  const at = existingAncestor(stateDir);
  const s = statfsSync(at);
  const free = s.bavail * s.bsize;
  const detail = `${fmt(free)} free for ${stateDir}${at !== resolve(stateDir) ? ` (on ${at}; not created yet)` : ''}`;
  if (free < 256 * MiB) {
    return { name: 'disk', status: 'fail', detail, fix: 'the database and its WAL need room: free space on that filesystem' };
  }
  if (free < 2 * GiB) {
    return { name: 'disk', status: 'warn', detail, fix: 'under 2 GiB free: no room for another model; the request log grows too' };
  }
  return { name: 'disk', status: 'ok', detail };
}

/**
 * Whether the model runs here: its file's metadata read as `edgellm inspect` reads it, and its memory
 * (weights + one KV cache per sequence + scratch + runtime) by the same memoryFit, so the two commands
 * print the same figures. Fail beyond total RAM or when the file cannot be loaded, warn beyond what
 * is available now.
 */
export function checkModel(path: string, opts: DoctorOptions, mem: DeviceMemory = deviceMemory()): DoctorCheck {
  const sequences = opts.sequences ?? 1;
  const fix = 'point -m / model: at a GGUF file edgellm runs (`edgellm inspect FILE` says what blocks this one)';
  let req;
  try {
    req = modelRequirements(path, opts.contextSize ? { contextSize: opts.contextSize } : {});
  } catch (err) {
    const e = err as EdgeError;
    return { name: 'model', status: 'fail', detail: `${e.code ?? 'error'}: ${e.message}`, fix };
  }
  if (req.tokenizer.status === 'blocked') return { name: 'model', status: 'fail', detail: `${req.tokenizer.code}: ${req.tokenizer.message}`, fix };
  if (req.unsupported_tensors.length > 0) {
    const types = [...new Set(req.unsupported_tensors.map((u) => u.type))].join(', ');
    return { name: 'model', status: 'fail', detail: `E_MODEL_UNSUPPORTED: ${req.unsupported_tensors.length} tensor(s) of types edgellm does not run (${types})`, fix };
  }
  const fit = memoryFit(req, mem, sequences);
  const detail =
    `${req.arch}, ${(req.n_params / 1e6).toFixed(req.n_params < 1e7 ? 2 : 0)}M params: needs ${describeNeeds(fit, req.context_size, formatBytes)}` +
    ` (RAM ${formatBytes(mem.totalBytes)}, ${formatBytes(mem.availableBytes)} available)`;
  if (fit.verdict === 'too-big') {
    return { name: 'model', status: 'fail', detail, fix: 'use a smaller model or quantization (Q4_0), a shorter context, or fewer sequences (batch.max)' };
  }
  if (fit.verdict === 'tight') {
    return { name: 'model', status: 'warn', detail, fix: 'more than is free now: stop other services, or expect the model to be paged from disk' };
  }
  return { name: 'model', status: 'ok', detail };
}

const DEFAULT_PORTS: Record<string, number> = { 'mqtt:': 1883, 'tcp:': 1883, 'mqtts:': 8883, 'ssl:': 8883, 'tls:': 8883, 'ws:': 80, 'wss:': 443 };

/** TCP connect to host:port; resolves with the time it took or rejects with the reason. */
export function tcpProbe(host: string, port: number, timeoutMs: number): Promise<number> {
  return new Promise((res, rej) => {
    const t0 = Date.now();
    const socket = connect({ host, port });
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    socket.once('connect', () => {
      socket.end();
      res(Date.now() - t0);
    });
    socket.once('error', rej);
  });
}

export async function checkBroker(url: string, timeoutMs: number): Promise<DoctorCheck> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return { name: 'broker', status: 'fail', detail: `"${url}" is not a URL`, fix: 'write it as mqtt://host:1883' };
  }
  const port = u.port ? Number(u.port) : DEFAULT_PORTS[u.protocol];
  if (!port || !u.hostname) {
    return { name: 'broker', status: 'fail', detail: `${url}: unknown scheme ${u.protocol}`, fix: 'use mqtt://, mqtts://, ws:// or wss://' };
  }
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  try {
    const ms = await tcpProbe(host, port, timeoutMs);
    return { name: 'broker', status: 'ok', detail: `${host}:${port} accepts connections (${ms} ms)` };
  } catch (err) {
    return {
      name: 'broker', status: 'fail', detail: `${host}:${port}: ${(err as Error).message}`,
      fix: 'start the broker (e.g. systemctl status mosquitto), check broker.url and the firewall',
    };
  }
}

/**
 * GET <url>/models, what the daemon's upstream client would reach (<url>/chat/completions): only a
 * 2xx passes. A refused key (401/403), a wrong base URL (404) or a server error is a failure that
 * says what to change; the key, when one is configured, is sent as the daemon sends it.
 */
export async function checkUpstream(url: string, timeoutMs: number, key?: Secret): Promise<DoctorCheck> {
  let models: URL;
  try {
    models = new URL(url);
  } catch {
    return { name: 'upstream', status: 'fail', detail: `"${url}" is not a URL`, fix: 'write it as the API base, e.g. https://api.example.com/v1' };
  }
  models.pathname = `${models.pathname.replace(/\/+$/, '')}/models`;
  const shown = `${models.origin}${models.pathname}`;
  const fail = (detail: string, fix: string): DoctorCheck => ({ name: 'upstream', status: 'fail', detail, fix });
  try {
    const t0 = Date.now();
    const r = await fetch(models, {
      signal: AbortSignal.timeout(timeoutMs),
      redirect: 'manual',
      ...(key ? { headers: { authorization: `Bearer ${key.reveal()}` } } : {}),
    });
    await r.body?.cancel();
    const answered = `GET ${shown} answered HTTP ${r.status}`;
    if (r.status >= 200 && r.status < 300) return { name: 'upstream', status: 'ok', detail: `${answered} (${Date.now() - t0} ms)` };
    if (r.status === 401 || r.status === 403) {
      return fail(answered, key ? 'the upstream refuses the API key: check upstream.api_key_file (or the upstream-key credential)' : 'the upstream wants an API key: set upstream.api_key_file (doctor -c CONFIG reads it)');
    }
    if (r.status === 404) {
      const v1 = /\/v\d+$/.test(models.pathname.replace(/\/models$/, '')) ? '' : ` (it usually ends in /v1: try ${url.replace(/\/+$/, '')}/v1)`;
      return fail(answered, `upstream.url must be the OpenAI-compatible API's base, the path before /chat/completions and /models${v1}`);
    }
    return fail(answered, 'the upstream is reachable but not answering OpenAI-compatible requests: check its logs and upstream.url');
  } catch (err) {
    const e = err as Error & { cause?: { code?: string; message?: string } };
    const why = e.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : (e.cause?.code ?? e.cause?.message ?? e.message);
    return fail(`${shown}: ${why}`, 'check upstream.url, DNS and the network; requests routed to the cloud will fall back or fail');
  }
}

/**
 * The clock: a Pi has no battery-backed RTC, so until NTP syncs it may think it is 1970 or the
 * last shutdown, and TLS certificates (mqtts, the upstream) look not-yet-valid or expired.
 * `ntpSynchronized` is timedatectl's NTPSynchronized (undefined when it cannot be asked).
 */
export function checkClock(now: Date, ntpSynchronized: boolean | undefined): DoctorCheck {
  const when = now.toISOString().replace(/\.\d+Z$/, 'Z');
  if (now.getUTCFullYear() < 2024) {
    return {
      name: 'clock', status: 'fail', detail: `the clock says ${when}`,
      fix: 'set the time: enable NTP (timedatectl set-ntp true) and check the network; TLS fails with a wrong clock',
    };
  }
  if (ntpSynchronized === false) {
    return { name: 'clock', status: 'warn', detail: `${when}, not synchronized by NTP`, fix: 'timedatectl set-ntp true (systemd-timesyncd), and let it reach an NTP server' };
  }
  return { name: 'clock', status: 'ok', detail: `${when}${ntpSynchronized ? ', NTP synchronized' : ' (NTP status unknown: no timedatectl)'}` };
}

export function ntpSynchronized(): boolean | undefined {
  const r = spawnSync('timedatectl', ['show', '--property=NTPSynchronized', '--value'], { encoding: 'utf8', timeout: 3000 });
  if (r.status !== 0) return undefined;
  const v = r.stdout.trim();
  return v === 'yes' ? true : v === 'no' ? false : undefined;
}

export async function runDoctor(opts: DoctorOptions): Promise<DoctorCheck[]> {
  const timeoutMs = opts.timeoutMs ?? 3000;
  const skip = (name: string, detail: string): DoctorCheck => ({ name, status: 'skip', detail });
  const checks: DoctorCheck[] = [checkCpu(), checkCores(cpuInfo(), opts.threads), checkMemory(), checkDisk(opts.stateDir ?? '/var/lib/edgellm')];
  checks.push(opts.model ? checkModel(opts.model, opts) : skip('model', 'no model configured (-m FILE)'));
  const [broker, upstream] = await Promise.all([
    opts.broker
      ? checkBroker(opts.broker, timeoutMs)
      : skip('broker', opts.embeddedBroker ? `no broker.url: serve runs its own broker on ${opts.embeddedBroker} (loopback, MQTT 3.1.1)` : 'no broker configured (--broker URL)'),
    opts.upstream ? checkUpstream(opts.upstream, timeoutMs, opts.upstreamKey) : skip('upstream', 'no upstream configured: local only'),
  ]);
  checks.push(broker, upstream, checkClock(new Date(), ntpSynchronized()));
  return checks;
}

interface DoctorFlags {
  config?: string;
  model?: string;
  broker?: string;
  upstream?: string;
  stateDir?: string;
  sequences?: string;
  context?: string;
  timeoutMs?: string;
  json?: boolean;
}

export function registerDoctor(program: Command): void {
  withExamples(program.command('doctor'), [
      ['edgellm doctor', 'this machine: CPU, memory, disk, clock'],
      ['edgellm doctor -m model.gguf --broker mqtt://localhost:1883', 'and a model\'s fit, and the broker'],
      ['edgellm doctor -c /etc/edgellm/config.yaml', 'everything the service\'s config names'],
    ])
    .description('check this machine for serving: CPU, memory, disk, model fit, broker, upstream, clock')
    .option('-c, --config <file>', 'the daemon config to check against (model, state_dir, broker.url, upstream.url, batch.max, engine.context_size, engine.threads)')
    .option('-m, --model <file>', 'GGUF model to check (overrides the config)')
    .option('--broker <url>', 'MQTT broker, e.g. mqtt://localhost:1883')
    .option('--upstream <url>', 'OpenAI-compatible upstream base URL')
    .option('--state-dir <dir>', 'state directory (default: /var/lib/edgellm, or $EDGELLM_STATE_DIR)')
    .option('--sequences <n>', 'sequences decoded at once, each with its KV cache (default: batch.max, else 1)')
    .option('--context <n>', 'positions per sequence (default: engine.context_size, else the model\'s, at most 4096; as inspect --context)')
    .option('--timeout-ms <ms>', 'per network check (default 3000)')
    .option('--json', 'one JSON object: {ok, checks: [{name, status, detail, fix}]}')
    .action(async (flags: DoctorFlags) => {
      // The daemon's own loader (one schema: file < EDGELLM_* < flags), so doctor checks what serve would use.
      const cfg = flags.config ? loadConfig({ file: flags.config }) : undefined;
      const opts: DoctorOptions = {};
      const model = flags.model ?? cfg?.model;
      const broker = flags.broker ?? cfg?.broker.url;
      const upstream = flags.upstream ?? (cfg?.upstream.url || undefined);
      const stateDir = flags.stateDir ?? cfg?.state_dir ?? process.env.EDGELLM_STATE_DIR;
      if (model) opts.model = model;
      if (broker) opts.broker = broker;
      else if (cfg) opts.embeddedBroker = embeddedBrokerUrl(cfg.broker.embedded);
      if (upstream) opts.upstream = upstream;
      const key = cfg ? readUpstreamSecret(cfg) : undefined;
      if (upstream && key) opts.upstreamKey = key;
      if (stateDir) opts.stateDir = stateDir;
      if (flags.sequences) opts.sequences = parsePositiveInt('--sequences', flags.sequences);
      else if (cfg) opts.sequences = cfg.batch.max;
      if (flags.context) opts.contextSize = parsePositiveInt('--context', flags.context);
      else if (cfg?.engine.context_size !== undefined) opts.contextSize = cfg.engine.context_size;
      if (cfg?.engine.threads !== undefined) opts.threads = cfg.engine.threads;
      if (flags.timeoutMs) opts.timeoutMs = parsePositiveInt('--timeout-ms', flags.timeoutMs);

      const checks = await runDoctor(opts);
      const failed = checks.filter((c) => c.status === 'fail');
      if (flags.json) {
        process.stdout.write(JSON.stringify({ ok: failed.length === 0, checks }) + '\n');
      } else {
        process.stdout.write(formatChecks(checks));
      }
      if (failed.length > 0) {
        const message = `edgellm doctor: ${failed.length} check(s) failed: ${failed.map((c) => c.name).join(', ')}`;
        process.stderr.write(message + '\n');
        // Exit 1 without the usage hint a usage error gets (runCli returns a CommanderError's exitCode).
        throw new CommanderError(1, 'edgellm.doctor', message);
      }
    });
}

export function formatChecks(checks: DoctorCheck[]): string {
  const lines: string[] = [];
  for (const c of checks) {
    lines.push(`${c.status.padEnd(5)} ${c.name.padEnd(9)} ${c.detail}`);
    if (c.fix && (c.status === 'warn' || c.status === 'fail')) lines.push(`${' '.repeat(16)}fix: ${c.fix}`);
  }
  return lines.join('\n') + '\n';
}
