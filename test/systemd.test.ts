// Running under systemd: the notify protocol as the service manager sees it (a unix datagram
// socket), and the unit file as `systemd-analyze verify` sees it.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SystemdNotifier, watchdogIntervalMs, addonSend } from '../src/daemon/systemd.js';
import { EdgeError } from '../src/errors.js';
import { hasPython3, listenNotify, type Datagram } from './helpers/notify-listener.js';

const root = resolve(fileURLToPath(import.meta.url), '..', '..');
const underCi = process.env.CI === 'true';

/**
 * A test that needs a tool runs without it only outside CI, as a loud skip; under CI=true it runs
 * and fails, because CI installs every tool (.ci/run).
 */
function requires(ok: boolean, missing: string): { skip: string | false } {
  if (ok || underCi) return { skip: false };
  process.stderr.write(`systemd.test: SKIPPED: ${missing}\n`);
  return { skip: `SKIPPED: ${missing}` };
}
const needs = {
  python3: requires(
    hasPython3(),
    'python3 listens on the unix datagram socket (apt-get install python3)',
  ),
  systemdAnalyze: requires(
    spawnSync('systemd-analyze', ['--version'], { stdio: 'ignore' }).status === 0,
    'systemd-analyze verifies the unit (apt-get install systemd)',
  ),
};

const listen = (address: string) => listenNotify(address);

/** Runs fn with NOTIFY_SOCKET set (the addon reads the real environment), then restores it. */
async function withNotifySocket<T>(value: string | undefined, fn: () => Promise<T>): Promise<T> {
  const saved = process.env.NOTIFY_SOCKET;
  if (value === undefined) delete process.env.NOTIFY_SOCKET;
  else process.env.NOTIFY_SOCKET = value;
  try {
    return await fn();
  } finally {
    if (saved === undefined) delete process.env.NOTIFY_SOCKET;
    else process.env.NOTIFY_SOCKET = saved;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('without NOTIFY_SOCKET notifying is a no-op that returns false', async (t) => {
  await withNotifySocket(undefined, async () => {
    t.equal(addonSend('READY=1'), false);
    const n = new SystemdNotifier({ env: { WATCHDOG_USEC: '1000000' } });
    t.equal(n.watchdogMs, undefined, 'no socket, no watchdog');
    t.equal(n.notifyReady(), false);
    t.equal(n.startWatchdog(), false);
    n.stop();
  });
});

t.test('the watchdog interval is half of WATCHDOG_USEC, and only for the watched pid', async (t) => {
  t.equal(watchdogIntervalMs({ WATCHDOG_USEC: '30000000' }, 42), 15000);
  t.equal(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '42' }, 42), 15000);
  t.equal(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '41' }, 42), undefined, 'another process');
  t.equal(watchdogIntervalMs({}, 42), undefined);
  t.equal(watchdogIntervalMs({ WATCHDOG_USEC: '0' }, 42), undefined);
  t.equal(watchdogIntervalMs({ WATCHDOG_USEC: 'soon' }, 42), undefined);
});

t.test('a relative NOTIFY_SOCKET is refused with E_SYSTEMD, and the notifier reports it once', async (t) => {
  await withNotifySocket('relative/socket', async () => {
    t.throws(() => addonSend('READY=1'), { code: 'E_SYSTEMD' });
    const errors: EdgeError[] = [];
    const n = new SystemdNotifier({ onError: (e) => errors.push(e) });
    t.equal(n.notifyStatus('hello'), false);
    t.equal(errors.length, 1);
    t.equal(errors[0]?.code, 'E_SYSTEMD');
  });
});

t.test('a notify service sends READY=1, WATCHDOG=1 every WATCHDOG_USEC/2, then STOPPING=1', needs.python3, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-notify-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const socket = join(dir, 'notify.sock');
  const { received, done } = await listen(socket);
  await withNotifySocket(socket, async () => {
    const n = new SystemdNotifier({ env: { NOTIFY_SOCKET: socket, WATCHDOG_USEC: '200000', WATCHDOG_PID: String(process.pid) } });
    t.equal(n.watchdogMs, 100);
    t.equal(n.notifyReady('model loaded\nbroker connected'), true);
    await sleep(650);
    t.equal(n.notifyStopping(), true);
    n.stop();
    await sleep(250); // no ping after stop()
    n.notify('EXIT');
  });
  await done;

  t.equal(received[0]?.msg, 'READY=1\nSTATUS=model loaded broker connected', 'READY first; STATUS on one line');
  t.equal(received[received.length - 1]?.msg, 'STOPPING=1', 'STOPPING=1 last: nothing after stop()');
  const pings = received.filter((d) => d.msg === 'WATCHDOG=1');
  // One ping at READY, then one every 100 ms for 650 ms; a loaded machine may drop one or two.
  t.ok(pings.length >= 5 && pings.length <= 8, `${pings.length} pings in 650 ms at 100 ms`);
  const gaps = pings.slice(1).map((p, i) => p.ms - (pings[i] as Datagram).ms).sort((a, b) => a - b);
  const median = gaps[Math.floor(gaps.length / 2)] ?? 0;
  t.ok(median >= 80 && median <= 160, `median gap ${median.toFixed(0)} ms is about 100 ms`);
});

t.test('an abstract-namespace NOTIFY_SOCKET (@name) is reached', needs.python3, async (t) => {
  const address = `@edgellm-test-${process.pid}-${Date.now()}`;
  const { received, done } = await listen(address);
  await withNotifySocket(address, async () => {
    const n = new SystemdNotifier();
    t.equal(n.notifyStatus('warming up'), true);
    n.notify('EXIT');
  });
  await done;
  t.same(received.map((d) => d.msg), ['STATUS=warming up']);
});

// `systemd-analyze verify` checks keys, values and that ExecStart exists; it exits 0 on mere
// warnings ("Unknown key", "Invalid syntax, ignoring"), so any line naming the unit fails the test.
function verify(unitText: string, dir: string): { status: number | null; complaints: string[]; output: string } {
  const unit = join(dir, 'edgellm.service');
  writeFileSync(unit, unitText);
  const r = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
  const output = `${r.stdout}${r.stderr}`;
  const complaints = output.split('\n').filter((l) => l.includes('edgellm.service') || l.includes(dir));
  return { status: r.status, complaints, output };
}

t.test('systemd/edgellm.service passes systemd-analyze verify once installed', needs.systemdAnalyze, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const exe = join(dir, 'edgellm');
  writeFileSync(exe, '#!/bin/sh\nexit 0\n');
  chmodSync(exe, 0o755);
  const template = readFileSync(join(root, 'systemd', 'edgellm.service'), 'utf8');
  // What install-offline.sh does, with ExecStart pointed at a stand-in executable.
  const installed = template
    .replaceAll('/opt/edgellm/current/bin/edgellm', exe)
    .replaceAll('@MEMORY_MAX@', '75%')
    .replaceAll('@CPU_QUOTA@', '400%');

  const ok = verify(installed, dir);
  t.equal(ok.status, 0, ok.output);
  t.same(ok.complaints, [], 'no warnings about the unit');

  for (const [key, value] of [
    ['Type', 'notify'],
    ['NotifyAccess', 'main'],
    ['WatchdogSec', '30'],
    ['Restart', 'on-failure'],
    ['User', 'edgellm'],
    ['StateDirectory', 'edgellm'],
    ['ConfigurationDirectory', 'edgellm'],
    ['ProtectSystem', 'strict'],
    ['TimeoutStartSec', '600'],
    ['RestrictAddressFamilies', 'AF_UNIX AF_INET AF_INET6'],
  ]) {
    t.match(template, new RegExp(`^${key}=${value}$`, 'm'), `${key}=${value}`);
  }
  t.notMatch(template, /^MemoryDenyWriteExecute=/m, "MemoryDenyWriteExecute would kill V8's JIT");

  // The check has teeth: the raw template (placeholders) and a misspelt key are reported.
  t.not(verify(template.replaceAll('/opt/edgellm/current/bin/edgellm', exe), dir).complaints, [], 'placeholders');
  t.not(verify(installed.replace('WatchdogSec=', 'WatchdogSecs='), dir).complaints, [], 'unknown key');
  t.not(verify(installed.replace(exe, join(dir, 'missing')), dir).status, 0, 'missing ExecStart');
});

// `systemd-analyze security` rates a unit's sandbox from 0 (locked down) to 10 (exposed); 2.5 or
// less is "OK". Rated offline on the unit as install-offline.sh writes it.
function exposure(unitText: string, dir: string): { level: number; output: string } {
  const unit = join(dir, 'edgellm.service');
  writeFileSync(unit, unitText);
  const r = spawnSync('systemd-analyze', ['security', '--offline=yes', '--no-pager', unit], { encoding: 'utf8' });
  const output = `${r.stdout}${r.stderr}`;
  const m = /Overall exposure level for edgellm\.service: ([0-9.]+)/.exec(output);
  return { level: m ? Number(m[1]) : Number.NaN, output };
}

t.test('the installed unit rates OK (<= 2.5) in systemd-analyze security, JIT allowed', needs.systemdAnalyze, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const installed = readFileSync(join(root, 'systemd', 'edgellm.service'), 'utf8')
    .replaceAll('@MEMORY_MAX@', '75%')
    .replaceAll('@CPU_QUOTA@', '400%');
  const rated = exposure(installed, dir);
  t.ok(rated.level <= 2.5, `exposure ${rated.level} <= 2.5\n${rated.output.split('\n').slice(-2).join('\n')}`);
  for (const key of ['CapabilityBoundingSet=', 'SystemCallFilter=@system-service', 'SystemCallFilter=~@privileged']) {
    t.match(installed, new RegExp(`^${key}$`, 'm'), key);
  }
  t.notMatch(installed, /^MemoryDenyWriteExecute=/m, "MemoryDenyWriteExecute would kill V8's JIT");
  // The rating has teeth: without the capability and system-call lines the unit is exposed again.
  const loose = installed
    .split('\n')
    .filter((l) => !/^(CapabilityBoundingSet|AmbientCapabilities|SystemCallFilter|SystemCallErrorNumber)=/.test(l))
    .join('\n');
  const worse = exposure(loose, dir);
  t.ok(worse.level > 2.5, `without them: exposure ${worse.level} > 2.5`);
});
