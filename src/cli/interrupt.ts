/**
 * Ctrl-C for every command: exit status 130 (128 + SIGINT), as a shell reports a process SIGINT
 * ended. A command that can stop cleanly (generate stops decoding and prints what it has, request
 * cancels at the node, serve drains) asks for `interruptSignal()` and winds down when it aborts;
 * any other command ends at once. A second Ctrl-C always ends the process at once.
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
  // stdout and stderr are synchronous for files, pipes and terminals on Linux: what was written is out.
  process.exit(EXIT_INTERRUPTED);
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
