/**
 * Telling systemd how the daemon is doing (Type=notify, WatchdogSec=): READY=1 once it serves,
 * STATUS= lines for `systemctl status`, WATCHDOG=1 pings, STOPPING=1 when it starts draining.
 * Outside systemd (NOTIFY_SOCKET unset) every call is a no-op that returns false.
 *
 *   const systemd = new SystemdNotifier();
 *   // ... open the store, load the model, connect the broker ...
 *   systemd.notifyReady('serving 1 model');   // also starts the watchdog pinger if systemd asked
 *   // on SIGTERM:
 *   systemd.notifyStopping();
 *   // ... drain ...
 *   systemd.stop();                            // the pinger's timer no longer holds the loop
 *
 * The pinger runs on the event loop on purpose: a loop that is stuck stops pinging, and systemd
 * restarts the service WatchdogSec later.
 */
import { EdgeError, fromNative } from '../errors.js';
import { loadAddon } from '../engine/native.js';

/** The variables systemd sets for a notify service (see systemd.exec(5), sd_watchdog_enabled(3)). */
export interface SystemdEnv {
  NOTIFY_SOCKET?: string | undefined;
  WATCHDOG_USEC?: string | undefined;
  WATCHDOG_PID?: string | undefined;
}

/**
 * How often to send WATCHDOG=1, in ms: half of WATCHDOG_USEC, as sd_watchdog_enabled(3)
 * recommends. undefined when no watchdog is asked for, or it is meant for another process
 * (WATCHDOG_PID set to a pid other than ours, e.g. a wrapper that did not exec).
 */
export function watchdogIntervalMs(env: SystemdEnv = process.env, pid: number = process.pid): number | undefined {
  const usec = Number(env.WATCHDOG_USEC ?? '');
  if (!Number.isSafeInteger(usec) || usec <= 0) return undefined;
  if (env.WATCHDOG_PID !== undefined && env.WATCHDOG_PID !== '' && Number(env.WATCHDOG_PID) !== pid) return undefined;
  return Math.max(1, Math.floor(usec / 2000));
}

export type NotifySend = (state: string) => boolean;

/** The addon's sdNotify: reads NOTIFY_SOCKET when called. */
export function addonSend(state: string): boolean {
  try {
    return loadAddon().sdNotify(state);
  } catch (err) {
    throw fromNative(err);
  }
}

export interface SystemdNotifierOptions {
  env?: SystemdEnv;
  pid?: number;
  /** Where datagrams go (default: the addon). */
  send?: NotifySend;
  /** Called when a notification fails; the default writes one line to stderr per distinct message. */
  onError?: (err: EdgeError) => void;
}

export class SystemdNotifier {
  /** ms between WATCHDOG=1 pings, or undefined when systemd does not watch this process. */
  readonly watchdogMs: number | undefined;
  private readonly send: NotifySend;
  private readonly onError: (err: EdgeError) => void;
  private readonly reported = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(opts: SystemdNotifierOptions = {}) {
    const env = opts.env ?? process.env;
    this.watchdogMs = env.NOTIFY_SOCKET ? watchdogIntervalMs(env, opts.pid ?? process.pid) : undefined;
    this.send = opts.send ?? addonSend;
    this.onError =
      opts.onError ??
      ((err) => {
        if (this.reported.has(err.message)) return;
        this.reported.add(err.message);
        process.stderr.write(`edgellm: warning: ${err.code}: ${err.message}\n`);
      });
  }

  /** READY=1 (with an optional STATUS=), then starts the watchdog pinger when systemd asked for one. */
  notifyReady(status?: string): boolean {
    const sent = this.notify(status === undefined ? 'READY=1' : `READY=1\nSTATUS=${oneLine(status)}`);
    this.startWatchdog();
    return sent;
  }

  /** STATUS=text: the line `systemctl status edgellm` shows. */
  notifyStatus(text: string): boolean {
    return this.notify(`STATUS=${oneLine(text)}`);
  }

  /** STOPPING=1: the service is draining. Watchdog pings continue until stop(). */
  notifyStopping(status?: string): boolean {
    return this.notify(status === undefined ? 'STOPPING=1' : `STOPPING=1\nSTATUS=${oneLine(status)}`);
  }

  /** Starts WATCHDOG=1 pings every watchdogMs (idempotent); false when no watchdog is asked for. */
  startWatchdog(): boolean {
    if (this.watchdogMs === undefined) return false;
    if (this.timer) return true;
    this.notify('WATCHDOG=1');
    this.timer = setInterval(() => this.notify('WATCHDOG=1'), this.watchdogMs);
    // The pinger must never be what keeps the process alive.
    this.timer.unref();
    return true;
  }

  /** Stops the watchdog pinger. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Sends raw assignments; false when not under systemd or when sending failed (reported through onError). */
  notify(state: string): boolean {
    try {
      return this.send(state);
    } catch (err) {
      this.onError(err instanceof EdgeError ? err : fromNative(err));
      return false;
    }
  }
}

/** A STATUS= value must not contain a newline: it would start a new assignment. */
function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ');
}
