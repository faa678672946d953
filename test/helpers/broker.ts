// A real mosquitto for the daemon's tests: its own config on a free loopback port, persistence in a
// temp directory (so a restart keeps sessions, as a production broker would), started and stopped per test.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

/** The mosquitto binary, or undefined when it is not installed. */
export function findMosquitto(): string | undefined {
  for (const p of [process.env.MOSQUITTO, '/usr/sbin/mosquitto', '/usr/bin/mosquitto', '/usr/local/sbin/mosquitto']) {
    if (p && spawnSync(p, ['-h']).error === undefined) return p;
  }
  return undefined;
}

/**
 * mosquitto for a test file whose tests all need it (`what` names them), or undefined: then, under
 * CI=true, a failure (.ci/run installs it, so these tests may not be skipped there); elsewhere a
 * loud skip.
 */
export function mosquittoFor(what: string): string | undefined {
  const bin = findMosquitto();
  if (bin) return bin;
  if (process.env.CI === 'true') {
    t.fail(`mosquitto is not installed: CI must install it (.ci/run), ${what} cannot be skipped there`);
  } else {
    process.stderr.write(`\n*** SKIPPED: mosquitto is not installed, so ${what} did not run (apt-get install mosquitto) ***\n\n`);
    t.test(what, { skip: 'mosquitto is not installed' }, async () => undefined);
  }
  return undefined;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

export class Broker {
  private proc: ChildProcess | undefined;
  readonly dir = mkdtempSync(join(tmpdir(), 'edgellm-mosquitto-'));
  log = '';

  private constructor(
    private readonly bin: string,
    readonly port: number,
  ) {
    // Run as root, mosquitto drops to the user "mosquitto", which must be able to write its persistence
    // file here; without this it saves nothing and every restart loses all sessions.
    chmodSync(this.dir, 0o777);
    writeFileSync(
      join(this.dir, 'mosquitto.conf'),
      [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence true', `persistence_location ${this.dir}/`, 'max_queued_messages 10000', ''].join('\n'),
    );
  }

  /** A broker with its port chosen but not started yet (tests of a daemon that starts first). */
  static async create(bin: string): Promise<Broker> {
    return new Broker(bin, await freePort());
  }

  static async start(bin: string): Promise<Broker> {
    const b = new Broker(bin, await freePort());
    await b.start();
    return b;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const proc = spawn(this.bin, ['-c', join(this.dir, 'mosquitto.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout?.on('data', (d) => (this.log += d));
    proc.stderr?.on('data', (d) => (this.log += d));
    this.proc = proc;
    const until = Date.now() + 5000;
    while (!(await canConnect(this.port))) {
      if (proc.exitCode !== null || Date.now() > until) throw new Error(`mosquitto did not start:\n${this.log}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** SIGTERM: mosquitto saves its persistence file and exits. */
  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (!proc || proc.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      proc.once('exit', () => resolve());
      proc.kill('SIGTERM');
    });
  }

  /**
   * SIGKILL, and the persistence file removed: a broker that comes back having lost every session,
   * subscription and queued message (a crash before its autosave, a replaced broker).
   */
  async crash(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (proc && proc.exitCode === null) {
      await new Promise<void>((resolve) => {
        proc.once('exit', () => resolve());
        proc.kill('SIGKILL');
      });
    }
    rmSync(join(this.dir, 'mosquitto.db'), { force: true });
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
