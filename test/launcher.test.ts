// The bundle's bin/edgellm names itself to the app (EDGELLM_COMMAND), so the installed daemon's log
// tells a Pi operator the command that is there (/opt/edgellm/current/bin/edgellm), never `npx edgellm`.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './helpers/broker.js';
import { cleanEnv, ServeProcess } from './helpers/serve.js';
import { assertCliBuilt, cli, root } from './fixtures/paths.js';

t.before(assertCliBuilt);
const work = mkdtempSync(join(tmpdir(), 'edgellm-launcher-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

/** An installed version's layout (bin/, runtime/bin/node, app/dist/cli/main.js) whose app prints what it was given. */
function fakeVersion(): string {
  const dir = join(work, 'opt', '0.1.0');
  mkdirSync(join(dir, 'bin'), { recursive: true });
  mkdirSync(join(dir, 'runtime', 'bin'), { recursive: true });
  mkdirSync(join(dir, 'app', 'dist', 'cli'), { recursive: true });
  copyFileSync(join(root, 'scripts', 'edgellm-launcher.sh'), join(dir, 'bin', 'edgellm'));
  symlinkSync(process.execPath, join(dir, 'runtime', 'bin', 'node'));
  writeFileSync(join(dir, 'app', 'dist', 'cli', 'main.js'), 'console.log(JSON.stringify({ command: process.env.EDGELLM_COMMAND, addon: process.env.EDGELLM_ADDON }));\n');
  symlinkSync('0.1.0', join(work, 'opt', 'current'));
  return dir;
}

t.test('bin/edgellm passes the path it was run by, made absolute, as EDGELLM_COMMAND', async (t) => {
  const dir = fakeVersion();
  const viaCurrent = join(work, 'opt', 'current', 'bin', 'edgellm');
  const run = (cmd: string, cwd: string) => {
    const r = spawnSync('sh', [cmd], { cwd, encoding: 'utf8' });
    t.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as { command: string; addon: string };
  };
  const a = run(viaCurrent, '/');
  t.equal(a.command, viaCurrent, 'the `current` path systemd runs, not the version it resolves to');
  t.equal(a.addon, join(dir, 'app', 'build', 'Release', 'edgellm.node'), 'the addon of the version that runs');
  t.equal(run('current/bin/edgellm', join(work, 'opt')).command, join(work, 'opt', 'current', 'bin', 'edgellm'), 'a relative path is made absolute');
});

t.test("the daemon's 'try it' line uses EDGELLM_COMMAND, else npx edgellm", async (t) => {
  for (const [command, expected] of [['/opt/edgellm/current/bin/edgellm', '/opt/edgellm/current/bin/edgellm'], [undefined, 'npx edgellm']] as const) {
    const env = cleanEnv({ EDGELLM_BROKER_EMBEDDED_PORT: String(await freePort()), ...(command ? { EDGELLM_COMMAND: command } : {}) });
    const daemon = new ServeProcess(process.execPath, [cli, 'serve', '--demo', '--state-dir', join(work, `state-${expected.length}`)], env);
    t.teardown(() => daemon.kill());
    await daemon.waitForLog(/try it: [^\n]*\n/, 60_000);
    const line = daemon.records().find((r) => r.msg.startsWith('try it: '));
    t.match(line?.msg, new RegExp(`^try it: ${expected.replace(/[./]/g, '\\$&')} request -p Hello --broker mqtt://127\\.0\\.0\\.1:\\d+$`));
    t.same(await daemon.stop(), { code: 0, signal: null });
  }
});
