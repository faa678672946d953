// A password written into broker.url never reaches the daemon's log.
import t from 'tap';
import { createServer } from 'node:net';
import { loadConfig } from '../../src/config.js';
import { createLogger, type Logger } from '../../src/log.js';
import { MqttSession } from '../../src/transport/mqtt/session.js';
import { Topics } from '../../src/protocol/topics.js';
import type { OutgoingPackets } from '../../src/store/index.js';
import type { Outbox } from '../../src/store/outbox.js';

/** A loopback port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** The session's lines while it fails to reach a closed port, through `log`. */
async function linesWhileUnreachable(log: (lines: string[]) => Logger): Promise<{ lines: string[]; port: number }> {
  const port = await closedPort();
  const config = loadConfig({ env: {}, flags: { broker: `mqtt://plant:s3cret-pw@127.0.0.1:${port}`, model: 'm.gguf' } });
  const lines: string[] = [];
  const session = new MqttSession({
    config,
    topics: new Topics('edgellm', 'node-t'),
    outbox: { all: () => [], count: () => 0 } as unknown as Outbox,
    packets: { all: () => [] } as unknown as OutgoingPackets,
    sink: { receive: () => undefined, cancel: () => undefined },
    log: log(lines),
    password: undefined,
    models: [],
    metrics: () => ({}),
  });
  const started = session.start().catch(() => undefined);
  const deadline = Date.now() + 5000;
  while (!lines.some((l) => /broker/.test(l)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  await session.stop();
  await Promise.race([started, new Promise((r) => setTimeout(r, 1000))]);
  return { lines, port };
}

t.test('log lines name the broker without its password', async (t) => {
  const { lines, port } = await linesWhileUnreachable((lines) => createLogger('debug', (l) => lines.push(l)));
  const msgs = lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
  t.ok(msgs.some((m) => m.includes(`127.0.0.1:${port}`)), 'the broker is named in the log');
  t.notOk(lines.some((l) => l.includes('s3cret-pw')), 'the password is not');
});

t.test('the session leaves the password out itself, not only thanks to the logger', async (t) => {
  const raw = (lines: string[]): Logger => {
    const at = (level: string) => (msg: string) => void lines.push(`${level}: ${msg}`);
    return { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') };
  };
  const { lines, port } = await linesWhileUnreachable(raw);
  t.ok(lines.some((l) => l.includes(`127.0.0.1:${port}`)), 'the broker is named');
  t.notOk(lines.some((l) => l.includes('s3cret-pw')), 'the password is not');
});
