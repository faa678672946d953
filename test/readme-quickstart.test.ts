// Every command in the README's "Quick start", run as shown, so that README drift fails the suite.
// The fenced blocks under the heading are parsed; each command is mapped onto the built CLI:
// - `npm install`: what it builds (dist/cli/main.js, the addon) is there (the suite runs after it);
// - `npm start [-- ARGS]`: package.json's own start script (+ ARGS), in a scratch directory, on a free
//   port, until the daemon says how to try it, then SIGTERM and exit 0;
// - `npm test`: is the suite this file belongs to (package.json has it; not run from inside itself);
// - `npx edgellm ARGS`: node dist/cli/main.js ARGS; `serve` runs to readiness like npm start; `request`
//   goes to the demo daemon (its --broker added); the placeholders model.gguf, stories260K.gguf and
//   config.yaml are the team's stories260K.gguf and a config naming it.
// A `$ command` line is followed by its output: a greedy (`--temperature 0`) answer must be that text,
// a --json reply must have the README's keys in its order and the same route, route_reason, text,
// model and cached; an error must be that line and exit 2. A command this file cannot map fails it.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort } from './helpers/broker.js';
import { cleanEnv, runCli, ServeProcess } from './helpers/serve.js';
import { assertCliBuilt, cli, modelsDir, requireModel, root, type TapTest } from './fixtures/paths.js';

t.before(assertCliBuilt);
const work = mkdtempSync(join(tmpdir(), 'edgellm-quickstart-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

/** One command of a fenced block, and the output the README shows under it (`$` blocks only). */
interface Shown {
  command: string;
  output?: string;
}

/** The fenced blocks under "## Quick start", up to the next "## " heading. */
function quickStartCommands(readme: string): Shown[] {
  const start = readme.indexOf('\n## Quick start\n');
  if (start < 0) throw new Error('README.md has no "## Quick start" heading');
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  const shown: Shown[] = [];
  for (const m of section.matchAll(/^```[a-z]*\n([\s\S]*?)^```$/gm)) {
    const lines = m[1]!.split('\n').filter((l) => l.trim() !== '');
    if (lines.some((l) => l.startsWith('$ '))) {
      for (const l of lines) {
        if (l.startsWith('$ ')) shown.push({ command: l.slice(2), output: '' });
        else shown[shown.length - 1]!.output += `${l}\n`;
      }
    } else {
      for (const l of lines) for (const c of l.replace(/\s+#.*$/, '').split('&&')) shown.push({ command: c.trim() });
    }
  }
  return shown;
}

/** Shell words: spaces separate, double and single quotes group. */
function words(command: string): string[] {
  return [...command.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3]!);
}

const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const shown = quickStartCommands(readme);
const stories = join(modelsDir, 'stories260K.gguf');

/** A file argument of the README as a real path: the placeholders are the team's stories260K.gguf. */
function realFile(arg: string): string {
  if (arg === 'model.gguf' || arg === 'stories260K.gguf') return stories;
  if (arg.startsWith('../shared/models/')) return join(modelsDir, arg.slice('../shared/models/'.length));
  if (arg === 'config.yaml') {
    const config = join(work, 'config.yaml');
    writeFileSync(config, `state_dir: ${join(work, 'state-config')}\nmodel: ${stories}\n`);
    return config;
  }
  return arg;
}

/**
 * `serve` (argv after node) until its "try it" line; its broker URL. `owner` kills it at its end (the
 * demo daemon outlives the subtest that started it: the requests after it use it).
 */
async function serveToReadiness(t: TapTest, argv: string[], cwd: string, owner: TapTest = t): Promise<{ daemon: ServeProcess; broker: string }> {
  const port = await freePort();
  const daemon = new ServeProcess(process.execPath, argv, cleanEnv({ EDGELLM_BROKER_EMBEDDED_PORT: String(port) }), cwd);
  owner.teardown(() => daemon.kill());
  await daemon.waitForLog(/try it: [^\n]*\n/, 60_000);
  t.match(daemon.records().find((r) => r.msg.startsWith('try it:'))?.msg, /^try it: npx edgellm request -p Hello/);
  return { daemon, broker: `mqtt://127.0.0.1:${port}` };
}

/** package.json's start script as argv after node (its relative paths against the repository). */
function startScript(extra: string[]): string[] {
  const [node, main, ...rest] = words(pkg.scripts.start!);
  if (node !== 'node' || main === undefined) throw new Error(`package.json's start script is not "node FILE ...": ${pkg.scripts.start}`);
  return [resolve(root, main), ...rest, ...extra];
}

t.test('the quick start shows commands (the parser found its blocks)', async (t) => {
  t.ok(shown.length >= 8, `${shown.length} commands: ${shown.map((s) => s.command).join(' | ')}`);
  t.ok(shown.some((s) => s.command === 'npm start'), 'npm start');
  t.ok(shown.some((s) => s.command.startsWith('npx edgellm request')), 'edgellm request');
});

t.test('every quick-start command runs as the README shows it', async (t) => {
  const parent = t;
  const demoState = mkdtempSync(join(work, 'npm-start-'));
  let demo: { daemon: ServeProcess; broker: string } | undefined;
  for (const { command, output } of shown) {
    const argv = words(command);
    await t.test(command, async (t) => {
      if (command === 'npm install') {
        for (const built of ['dist/cli/main.js', 'build/Release/edgellm.node']) t.ok(existsSync(join(root, built)), `npm install built ${built}`);
      } else if (command === 'npm test') {
        t.type(pkg.scripts.test, 'string', 'package.json has the test script (this suite; not run from inside itself)');
      } else if (argv[0] === 'npm' && argv[1] === 'start') {
        const extra = argv.slice(argv[2] === '--' ? 3 : 2).map(realFile);
        if (extra.includes(stories) && !requireModel(t, 'stories260K.gguf', 'quick-start npm start -m')) return;
        // Its --state-dir .edgellm lands in a scratch directory, not the repository.
        const run = await serveToReadiness(t, startScript(extra), extra.length === 0 ? demoState : mkdtempSync(join(work, 'start-')), extra.length === 0 ? parent : t);
        if (extra.length === 0) {
          t.match(run.daemon.log, /serving the demo model .*edgellm-demo\.gguf/, 'npm start serves the demo model');
          demo = run; // the requests below go to it
        } else {
          t.same(await run.daemon.stop(), { code: 0, signal: null });
        }
      } else if (argv[0] === 'npx' && argv[1] === 'edgellm') {
        const args = argv.slice(2).map(realFile);
        if (args.includes(stories) && !requireModel(t, 'stories260K.gguf', `quick-start ${command}`)) return;
        if (args[0] === 'serve') {
          const run = await serveToReadiness(t, [cli, ...args], mkdtempSync(join(work, 'serve-')));
          t.same(await run.daemon.stop(), { code: 0, signal: null });
          return;
        }
        if (args[0] === 'request') {
          if (!demo) throw new Error('the README runs `edgellm request` before `npm start`');
          args.push('--broker', demo.broker);
        } else if (args[0] !== 'generate') {
          throw new Error(`the quick start shows a command this test does not run: ${command} (add it here)`);
        }
        const r = await runCli(cli, args, { timeoutMs: 120_000, cwd: work });
        checkOutput(t, args, r, output);
      } else {
        throw new Error(`the quick start shows a command this test does not run: ${command} (add it here)`);
      }
    });
  }
  if (demo) t.same(await demo.daemon.stop(), { code: 0, signal: null }, 'npm start stops on SIGTERM with exit 0');
});

/** The command's result against the output the README shows under it. */
function checkOutput(t: TapTest, args: string[], r: { status: number | null; stdout: string; stderr: string }, shownOutput: string | undefined) {
  const expected = shownOutput ?? '';
  if (expected.startsWith('edgellm: E_')) {
    t.equal(r.status, 2, 'an error exits 2');
    t.equal(r.stderr, expected, 'the error line the README shows');
    return;
  }
  t.equal(r.status, 0, r.stderr);
  const greedy = args.includes('--temperature') && args[args.indexOf('--temperature') + 1] === '0';
  if (args.includes('--json')) {
    const got = JSON.parse(r.stdout) as Record<string, unknown>;
    const want = JSON.parse(expected) as Record<string, unknown>;
    t.same(Object.keys(got), Object.keys(want), 'the reply has the README\'s keys in its order');
    for (const k of ['type', 'finish_reason', 'route', 'route_reason', 'cached', 'model', ...(greedy ? ['text', 'usage'] : [])]) {
      t.same(got[k], want[k], `${k} as the README shows`);
    }
  } else if (greedy) {
    t.equal(r.stdout.trimEnd(), expected.trimEnd(), 'the greedy text the README shows');
  } else {
    t.ok(r.stdout.trim().length > 0, `some text: ${r.stdout.trim().slice(0, 60)}`);
  }
}
