// `edgellm serve` as its own process with the real engine (built dist, or an installed bundle), and the
// shared models it runs: the team's models live in ../shared/models beside the repository.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(fileURLToPath(import.meta.url), '..', '..', '..');
export const stories = resolve(repoRoot, '..', 'shared', 'models', 'stories260K.gguf');
export const hasStories = () => existsSync(stories);
/** What stories260K continues "Once upon a time" with, greedily (the README's example). */
export const STORIES_CONTINUATION = ', there was a little girl named Lily';

/**
 * A loud skip outside CI; under CI=true the test runs (and fails), because CI has every tool and model.
 * `who` names the test file in the message.
 */
export function requires(who: string, ok: boolean, missing: string): { skip: string | false } {
  if (ok || process.env.CI === 'true') return { skip: false };
  process.stderr.write(`\n*** ${who}: SKIPPED: ${missing} ***\n\n`);
  return { skip: `SKIPPED: ${missing}` };
}

/** The environment without the EDGELLM_* settings (and systemd's NOTIFY_SOCKET) of whoever runs the tests, plus `extra`. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('EDGELLM_') || k === 'NOTIFY_SOCKET') delete env[k];
  return { ...env, ...extra };
}

/** The built CLI (`cli`, dist/cli/main.js) with `args` to completion, in a clean environment: exit status, output, how long it took. */
export function runCli(cli: string, args: string[], opts: { timeoutMs?: number; cwd?: string } = {}): Promise<{ status: number | null; stdout: string; stderr: string; ms: number }> {
  const started = Date.now();
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [cli, ...args], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'], ...(opts.cwd ? { cwd: opts.cwd } : {}) });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`edgellm ${args.join(' ')} hung for ${timeoutMs} ms:\n${stderr}`));
    }, timeoutMs);
    p.on('exit', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** One line of the daemon's JSON log. */
export interface LogRecord {
  level: string;
  time: string;
  msg: string;
  [field: string]: unknown;
}

/** The daemon's stdout as log records; throws on a line that is not one (the log is JSON lines only). */
export function logRecords(stdout: string): LogRecord[] {
  return stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      let r: unknown;
      try {
        r = JSON.parse(l);
      } catch {
        throw new Error(`not a JSON log line: ${l}`);
      }
      const rec = r as LogRecord;
      if (typeof rec.level !== 'string' || typeof rec.msg !== 'string' || Number.isNaN(Date.parse(rec.time))) {
        throw new Error(`a log line without level, time and msg: ${l}`);
      }
      return rec;
    });
}

export class ServeProcess {
  /** Everything the daemon wrote to stdout (its JSON log) and stderr (a fatal error's one line). */
  log = '';
  stdout = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly proc: ChildProcess;

  constructor(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd?: string) {
    this.proc = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'], ...(cwd ? { cwd } : {}) });
    this.proc.stdout?.on('data', (d: Buffer) => {
      this.log += d.toString();
      this.stdout += d.toString();
    });
    this.proc.stderr?.on('data', (d: Buffer) => (this.log += d.toString()));
    this.exited = new Promise((res) => this.proc.on('exit', (code, signal) => res({ code, signal })));
  }

  /** The log so far, parsed (see logRecords). */
  records(): LogRecord[] {
    return logRecords(this.stdout);
  }

  get pid(): number {
    return this.proc.pid ?? 0;
  }

  /** Resolves when the log matches; rejects when the daemon exits first or time runs out. */
  async waitForLog(re: RegExp, timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!re.test(this.log)) {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) throw new Error(`serve exited before its log matched ${re}:\n${this.log}`);
      if (Date.now() > until) throw new Error(`serve's log did not match ${re} within ${timeoutMs} ms:\n${this.log}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** SIGTERM, as systemd stops it; resolves with how it exited. */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGTERM');
    return this.exited;
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}
