// Daemons for the tests: in this process (a Service with FakeModel), or as a child process that can be
// SIGKILLed (test/helpers/daemon-child.ts, run through the same TypeScript loader tap uses).
import { spawn, type ChildProcess } from 'node:child_process';
import { basename, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { configSchema, type DaemonConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { Service } from '../../src/daemon/service.js';
import { FakeModel } from './fake-model.js';

const root = resolve(fileURLToPath(import.meta.url), '..', '..', '..');

export function daemonConfig(over: Record<string, unknown>): DaemonConfig {
  return configSchema.parse({ model: '/models/fake.gguf', log: { level: 'error' }, metrics: { interval_s: 1 }, ...over });
}

export async function startDaemon(config: DaemonConfig, delayMs = 0): Promise<{ service: Service; models: FakeModel[]; logs: string[] }> {
  const models: FakeModel[] = [];
  const logs: string[] = [];
  const service = new Service(
    config,
    async (path) => {
      const m = new FakeModel(basename(path).replace(/\.gguf$/, ''), delayMs);
      models.push(m);
      return m;
    },
    createLogger('debug', (line) => logs.push(line)),
  );
  await service.start();
  return { service, models, logs };
}

export class DaemonProcess {
  /** stdout and stderr together. */
  output = '';
  /** The JSON log alone. */
  stdout = '';
  private constructor(readonly proc: ChildProcess) {
    proc.stdout?.on('data', (d) => {
      this.output += d;
      this.stdout += d;
    });
    proc.stderr?.on('data', (d) => (this.output += d));
  }

  /** Starts the child and resolves once it has said "ready". */
  static async start(config: DaemonConfig, delayMs: number): Promise<DaemonProcess> {
    const proc = spawn(
      process.execPath,
      ['--expose-gc', '--import', '@tapjs/typescript/import', resolve(root, 'test', 'helpers', 'daemon-child.ts'), JSON.stringify({ ...config, log: { level: 'debug' } }), String(delayMs)],
      { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' } },
    );
    const d = new DaemonProcess(proc);
    const until = Date.now() + 30_000;
    while (!/"msg":"node \S+ ready"/.test(d.output)) {
      if (proc.exitCode !== null || Date.now() > until) throw new Error(`the daemon did not start:\n${d.output}`);
      await new Promise((r) => setTimeout(r, 25));
    }
    return d;
  }

  /** Resolves once the output matches `re`. */
  async waitFor(re: RegExp, timeoutMs = 10_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!re.test(this.output)) {
      if (Date.now() > until) throw new Error(`timed out waiting for ${re} in:\n${this.output}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Has the child collect its garbage (SIGUSR2, see daemon-child.ts); resolves with the heap left in use, in bytes. */
  async collectGarbage(): Promise<number> {
    const before = this.output.match(/gc: heap \d+/g)?.length ?? 0;
    this.proc.kill('SIGUSR2');
    const until = Date.now() + 10_000;
    for (;;) {
      const all = [...this.output.matchAll(/gc: heap (\d+)/g)];
      if (all.length > before) return Number(all[all.length - 1]![1]);
      if (Date.now() > until) throw new Error('the daemon did not answer SIGUSR2 with its heap size');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  kill(signal: NodeJS.Signals): Promise<void> {
    return new Promise((resolve) => {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) return resolve();
      this.proc.once('exit', () => resolve());
      this.proc.kill(signal);
    });
  }
}
