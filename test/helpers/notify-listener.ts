// The service manager's end of sd_notify for tests. Node cannot bind an AF_UNIX datagram socket, so
// python3 plays it: it binds the address given in argv[1] ('@name' = abstract) and prints each datagram
// as one JSON line {"ms": monotonic milliseconds, "msg": text}. It exits on the datagram "EXIT", or
// after `idleSeconds` without one.
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';

const LISTENER = `
import json, socket, sys, time
addr = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('\\0' + addr[1:] if addr.startswith('@') else addr)
print('LISTENING', flush=True)
s.settimeout(float(sys.argv[2]))
while True:
    msg = s.recv(4096).decode()
    if msg == 'EXIT':
        break
    print(json.dumps({'ms': time.monotonic() * 1000, 'msg': msg}), flush=True)
`;

export interface Datagram {
  /** CLOCK_MONOTONIC in ms (the same clock as process.hrtime on Linux). */
  ms: number;
  msg: string;
}

export const hasPython3 = () => spawnSync('python3', ['-c', 'import socket'], { stdio: 'ignore' }).status === 0;

/** Starts the listener on `address` and resolves once it is bound. */
export async function listenNotify(
  address: string,
  idleSeconds = 20,
): Promise<{ child: ChildProcessWithoutNullStreams; received: Datagram[]; done: Promise<void> }> {
  const child = spawn('python3', ['-c', LISTENER, address, String(idleSeconds)]);
  const received: Datagram[] = [];
  const lines = createInterface({ input: child.stdout });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<void>((res, rej) =>
    child.on('exit', (code) => (code === 0 ? res() : rej(new Error(`listener exited ${code}: ${stderr}`)))),
  );
  await new Promise<void>((res, rej) => {
    lines.on('line', (line) => {
      if (line === 'LISTENING') res();
      else received.push(JSON.parse(line) as Datagram);
    });
    done.catch(rej);
  });
  return { child, received, done };
}
