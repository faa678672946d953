// log.format: the same records as JSON lines on a pipe or journald, as one readable line each on a
// terminal (pino-pretty); json | pretty | auto from the config, EDGELLM_LOG_FORMAT or --log-format.
// The terminal is a real one: the built CLI runs under util-linux's `script`, which gives it a pty.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config.js';
import { createLogger, resolveLogFormat } from '../../src/log.js';
import { freePort } from '../helpers/broker.js';
import { cleanEnv, logRecords, requires } from '../helpers/serve.js';
import { assertCliBuilt, cli, root } from '../fixtures/paths.js';

t.before(assertCliBuilt);
const work = mkdtempSync(join(tmpdir(), 'edgellm-logfmt-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

// A readable line: local time, level, message, then any fields as compact JSON.
const READABLE = /^\[\d\d:\d\d:\d\d\.\d{3}\] (INFO|WARN|ERROR|DEBUG): /;
// eslint-disable-next-line no-control-regex
const stripColour = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '');

function capture(format: 'json' | 'pretty') {
  const lines: string[] = [];
  const log = createLogger('debug', (l) => lines.push(l), { base: { node: 'pi-1' }, format });
  return { log, lines };
}

t.test('pretty: one readable line per record, fields after the message, no node id', async (t) => {
  const { log, lines } = capture('pretty');
  log.info('node pi-1 ready');
  log.warn('broker gone', { broker: 'mqtt://127.0.0.1:1883', attempt: 2 });
  log.error('two\nlines');
  log.warn('upstream failed', { error: 'HTTP 500', err: { code: 'E_UPSTREAM', message: 'cut' } });
  t.equal(lines.length, 4);
  for (const l of lines) t.ok(l.endsWith('\n') && !l.slice(0, -1).includes('\n'), `one line: ${JSON.stringify(l)}`);
  t.match(lines[0], /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: node pi-1 ready\n$/);
  t.match(lines[1], /^\[[^\]]+\] WARN: broker gone \{"broker":"mqtt:\/\/127\.0\.0\.1:1883","attempt":2\}\n$/);
  t.match(lines[2], /ERROR: two ⏎ lines\n$/, 'a newline inside a message keeps the record on one line');
  t.match(lines[3], /WARN: upstream failed \{"error":"HTTP 500","err":\{[^\n]*"code":"E_UPSTREAM"[^\n]*\}\}\n$/, 'error fields stay on the line');
  t.notMatch(lines.join(''), /pi-1"|"node"/, 'the node id field is left out');
  t.notMatch(lines.join(''), /\x1b\[/, 'no colour codes when not writing to a terminal');
});

t.test('pretty lines are redacted like JSON ones', async (t) => {
  const { log, lines } = capture('pretty');
  log.protect?.('pw-broker-123');
  log.warn('broker said: bad password pw-broker-123', { url: 'mqtt://u:pw-broker-123@host:1883', api_key: 'sk-1' });
  t.notMatch(lines.join(''), /pw-broker-123|sk-1/);
});

t.test('resolveLogFormat: json and pretty are kept; auto is json for a pipe', async (t) => {
  t.equal(resolveLogFormat('json'), 'json');
  t.equal(resolveLogFormat('pretty'), 'pretty');
  // Under tap, this process's stdout is a pipe to the runner.
  t.equal(resolveLogFormat('auto', 1), 'json');
});

t.test('log.format is one config key: file, EDGELLM_LOG_FORMAT and --log-format, auto by default', async (t) => {
  t.equal(loadConfig({ env: {} }).log.format, 'auto');
  t.equal(loadConfig({ env: { EDGELLM_LOG_FORMAT: 'json' } }).log.format, 'json');
  t.equal(loadConfig({ env: { EDGELLM_LOG_FORMAT: 'json' }, flags: { logFormat: 'pretty' } }).log.format, 'pretty');
  t.throws(() => loadConfig({ env: { EDGELLM_LOG_FORMAT: 'yaml' } }), { code: 'E_CONFIG', message: /log\.format.*must be one of auto, json, pretty/ });
});

/**
 * `serve --demo` until it says how to try it, then SIGINT; its stdout. With `tty` it runs under
 * `script -qec CMD /dev/null`, so its stdout is a terminal (script copies the pty's output to ours).
 */
async function serveOutput(name: string, opts: { tty: boolean; env?: NodeJS.ProcessEnv; args?: string[] }): Promise<string> {
  const port = await freePort();
  const argv = [cli, 'serve', '--demo', '--state-dir', join(work, name), ...(opts.args ?? [])];
  const env = cleanEnv({ EDGELLM_BROKER_EMBEDDED_PORT: String(port), ...opts.env });
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const p = opts.tty
    ? spawn('script', ['-qec', [process.execPath, ...argv].map(quote).join(' '), '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'] })
    : spawn(process.execPath, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d: Buffer) => (out += d.toString()));
  p.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((res) => p.on('exit', () => res()));
  const until = Date.now() + 60_000;
  while (!/try it: [^\n]*\n/.test(stripColour(out))) {
    if (p.exitCode !== null || Date.now() > until) {
      p.kill('SIGKILL');
      throw new Error(`serve did not get ready:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  // SIGTERM to the daemon itself (under script, the child script started), as systemd stops it; script
  // then ends with it, without a "session terminated" line of its own.
  const children = opts.tty ? spawnSync('pgrep', ['-P', String(p.pid)], { encoding: 'utf8' }).stdout.split('\n').filter((s) => s !== '') : [];
  if (opts.tty && children.length === 0) throw new Error(`no daemon under script (pid ${p.pid})`);
  for (const pid of opts.tty ? children.map(Number) : [p.pid!]) process.kill(pid, 'SIGTERM');
  await exited;
  return stripColour(out).replace(/\r\n/g, '\n');
}

const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;

t.test('serve on a terminal: every log line is readable, none is JSON, also with an inherited JOURNAL_STREAM', requires('log-format.test.ts', hasScript, "util-linux's `script` is not installed (apt-get install bsdutils)"), async (t) => {
  const out = await serveOutput('tty', { tty: true, env: { JOURNAL_STREAM: '8:12345' } });
  const lines = out.split('\n').filter((l) => l.trim() !== '');
  t.ok(lines.length >= 4, `several lines:\n${out}`);
  for (const l of lines) t.match(l, READABLE, `readable: ${l}`);
  t.ok(lines.some((l) => /INFO: node \S+ ready$/.test(l)), 'the ready line');
  t.ok(lines.some((l) => /WARN: no model configured: serving the demo model/.test(l)), 'the demo warning');
});

t.test('serve on a terminal with EDGELLM_LOG_FORMAT=json writes JSON lines', requires('log-format.test.ts', hasScript, "util-linux's `script` is not installed"), async (t) => {
  const out = await serveOutput('tty-json', { tty: true, env: { EDGELLM_LOG_FORMAT: 'json' } });
  const records = logRecords(out);
  t.ok(records.some((r) => /^node \S+ ready$/.test(r.msg)), 'the ready record');
});

t.test('serve on a pipe writes JSON lines; --log-format pretty makes them readable', async (t) => {
  const records = logRecords(await serveOutput('pipe', { tty: false }));
  t.ok(records.some((r) => /^node \S+ ready$/.test(r.msg) && r.level === 'info'), 'the ready record');
  const pretty = (await serveOutput('pipe-pretty', { tty: false, args: ['--log-format', 'pretty'] })).split('\n').filter((l) => l !== '');
  for (const l of pretty) t.match(l, READABLE, `readable: ${l}`);
});

t.test("the docs' log samples are in the real formats: readable lines as the logger writes them, JSON lines with level, time, msg", async (t) => {
  const files = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join('docs', f))];
  let readable = 0;
  let json = 0;
  for (const file of files) {
    for (const line of readFileSync(join(root, file), 'utf8').split('\n')) {
      const m = /^\[(\d\d:\d\d:\d\d\.\d{3})\] (INFO|WARN|ERROR|DEBUG): (.*)$/.exec(line);
      if (m) {
        readable++;
        // The same message through the logger, at that level: the line it writes, but for the time.
        const { log, lines } = capture('pretty');
        log[m[2]!.toLowerCase() as 'info'](m[3]!);
        t.equal(lines[0]!.replace(/^\[[^\]]+\]/, `[${m[1]}]`), `${line}\n`, `${file}: ${line.slice(0, 60)}`);
      } else if (/^\[\d\d:\d\d/.test(line)) {
        t.fail(`${file}: a log sample line not in the readable format: ${line}`);
      } else if (line.startsWith('{"level":')) {
        json++;
        const r = logRecords(line)[0]!;
        t.same(Object.keys(r).slice(0, 2), ['level', 'time'], `${file}: a JSON log line starts with level and time`);
        t.ok(typeof r.node === 'string' && typeof r.msg === 'string', `${file}: node and msg: ${line.slice(0, 60)}`);
      }
    }
  }
  t.ok(readable >= 5 && json >= 4, `${readable} readable and ${json} JSON sample lines checked`);
});
