/**
 * Ctrl-C for every command: the shell sees status 130 (128 + SIGINT). A command that can stop
 * cleanly (generate stops decoding and prints what it has, request cancels at the node, serve
 * drains) asks for `interruptSignal()`, winds down when it aborts and exits 130 (serve 0). Any other
 * command ends at once, by SIGINT itself: process.exit() would wait for a native job running on
 * libuv's thread pool (a `bench kernels` measurement, a quantization) to finish first. A second
 * Ctrl-C always ends the process at once. What was printed is out either way: stdout and stderr
 * are synchronous for files, pipes and terminals on Linux.
 */

export const EXIT_INTERRUPTED = 130;

/** Thrown by a command that stopped because of Ctrl-C: runCli exits 130 without an error line. */
export class Interrupted extends Error {
  constructor() {
    super('interrupted');
    this.name = 'Interrupted';
  }
}

let controller = new AbortController();
let graceful = false;

function onSigint(): void {
  if (graceful && !controller.signal.aborted) {
    controller.abort(new Interrupted());
    return;
  }
  // Without a listener Node restores the default action: the signal ends the process now.
  process.off('SIGINT', onSigint);
  process.kill(process.pid, 'SIGINT');
}

/** Installed by runCli for the command's run; returns the uninstall. */
export function handleSigint(): () => void {
  controller = new AbortController();
  graceful = false;
  process.on('SIGINT', onSigint);
  return () => {
    process.off('SIGINT', onSigint);
  };
}

/** The command will stop cleanly on Ctrl-C: this signal aborts (with an Interrupted reason) instead of the process exiting. */
export function interruptSignal(): AbortSignal {
  graceful = true;
  return controller.signal;
}
