// A password written into broker.url never reaches the daemon's log.
import t from 'tap';
import { createServer } from 'node:net';
import { loadConfig } from '../../src/daemon/config.js';
import { createLogger } from '../../src/daemon/log.js';
import { MqttSession } from '../../src/transport/mqtt/session.js';
import { Topics } from '../../src/transport/mqtt/topics.js';
import type { Outbox } from '../../src/store/outbox.js';

/** A loopback port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

t.test('log lines name the broker without its password', async (t) => {
  const port = await closedPort();
  const config = loadConfig({ env: {}, flags: { broker: `mqtt://plant:s3cret-pw@127.0.0.1:${port}`, model: 'm.gguf' } });
  const lines: string[] = [];
  const session = new MqttSession({
    config,
    topics: new Topics('edgellm', 'node-t'),
    outbox: { all: () => [], count: () => 0 } as unknown as Outbox,
    sink: { receive: () => undefined, cancel: () => undefined },
    log: createLogger('debug', (l) => lines.push(l)),
    password: undefined,
    models: [],
    metrics: () => ({}),
  });
  const started = session.start().catch(() => undefined);
  const deadline = Date.now() + 5000;
  while (!lines.some((l) => /broker/.test(l)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  await session.stop();
  await Promise.race([started, new Promise((r) => setTimeout(r, 1000))]);
  t.ok(lines.some((l) => l.includes(`127.0.0.1:${port}`)), 'the broker is named in the log');
  t.notOk(lines.some((l) => l.includes('s3cret-pw')), 'the password is not');
});
