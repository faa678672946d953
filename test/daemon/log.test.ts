// The daemon's log: JSON lines (pino) with level, time and msg, filtered by level, and no secret in any.
import t from 'tap';
import { createLogger } from '../../src/log.js';

function capture(level: Parameters<typeof createLogger>[0], base?: Record<string, unknown>) {
  const lines: string[] = [];
  const log = createLogger(level, (l) => lines.push(l), base ? { base } : {});
  const records = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { log, lines, records };
}

t.test('one JSON object per line with level, ISO time and msg, plus the base and structured fields', async (t) => {
  const { log, lines, records } = capture('debug', { node: 'pi-1' });
  log.info('node pi-1 ready');
  log.warn('broker gone', { broker: 'mqtt://127.0.0.1:1883', attempt: 2 });
  t.equal(lines.length, 2);
  for (const l of lines) t.ok(l.endsWith('\n') && !l.slice(0, -1).includes('\n'), 'one line, newline-terminated');
  const [a, b] = records();
  t.same(Object.keys(a!).sort(), ['level', 'msg', 'node', 'time']);
  t.match(a, { level: 'info', node: 'pi-1', msg: 'node pi-1 ready' });
  t.ok(!Number.isNaN(Date.parse(String(a!.time))) && /Z$/.test(String(a!.time)), `ISO time in UTC: ${a!.time}`);
  t.match(b, { level: 'warn', msg: 'broker gone', broker: 'mqtt://127.0.0.1:1883', attempt: 2 });
});

t.test('lines below log.level are dropped', async (t) => {
  const { log, records } = capture('warn');
  log.debug('d');
  log.info('i');
  log.warn('w');
  log.error('e');
  t.same(records().map((r) => [r.level, r.msg]), [['warn', 'w'], ['error', 'e']]);
});

t.test('secrets never reach a line: protected values, URL credentials, secret-looking fields', async (t) => {
  const { log, lines } = capture('debug');
  log.protect?.('pw-broker-123');
  log.protect?.('sk-upstream-456');
  log.protect?.(undefined);
  log.protect?.('  ');
  log.info('broker said: bad password pw-broker-123');
  log.error('upstream replied 401 for key sk-upstream-456');
  log.warn('cannot reach mqtt://plant:hunter2@10.0.0.5:1883');
  log.debug('config', { broker: { url: 'mqtts://u:p4ss@b:8883', password: 'p4ss' }, upstream: { api_key: 'k-1', url: 'https://x/v1?api_key=k-2' } });
  const all = lines.join('');
  for (const secret of ['pw-broker-123', 'sk-upstream-456', 'hunter2', 'p4ss', 'k-1', 'k-2']) t.notOk(all.includes(secret), `${secret} is not logged`);
  t.match(all, /bad password \[redacted\]/, 'the line itself is kept');
  t.match(all, /10\.0\.0\.5:1883/, 'the broker is still named');
  t.equal(lines.length, 4);
});
