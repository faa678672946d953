// One CLI voice (#14): every error of every command, argument parsing included, is one line
// `edgellm: E_CODE: message` and exit 2; every --help ends with examples; a misspelt EDGELLM_*
// variable or config key gets a "did you mean"; Ctrl-C is status 130.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { buildProgram, runCli } from '../src/cli/program.js';
import { loadConfig, unknownEnvironmentWarnings } from '../src/config.js';
import { didYouMean, editDistance, similarNames } from '../src/suggest.js';
import { assertCliBuilt, cli, root, run, type TapTest } from './fixtures/paths.js';

t.before(assertCliBuilt);

const dir = mkdtempSync(join(tmpdir(), 'edgellm-cli-voice-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const commands = buildProgram().commands.map((c) => c.name());

/** The CLI with exactly these EDGELLM_* variables (the test's own environment's are dropped). */
function runWithEnv(args: string[], vars: Record<string, string>) {
  const env: NodeJS.ProcessEnv = { ...process.env, ...vars };
  for (const k of Object.keys(env)) if (k.startsWith('EDGELLM_') && !(k in vars)) delete env[k];
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', cwd: root, env });
}

/**
 * runCli in this process, stderr captured: what main.js runs, without a process start per case (seconds
 * each on a busy machine). Only for command lines that fail before any work; spawns below show the real CLI.
 */
async function runHere(args: string[]): Promise<{ status: number; stderr: string }> {
  let stderr = '';
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  try {
    return { status: await runCli(args), stderr };
  } finally {
    process.stderr.write = write;
  }
}

function oneLine(t: TapTest, r: { status: number | null; stderr: string }, re: RegExp, what: string): void {
  t.equal(r.status, 2, `${what}: exit 2`);
  t.equal(r.stderr.split('\n').length, 2, `${what}: one line on stderr, got ${JSON.stringify(r.stderr)}`);
  t.match(r.stderr, re, what);
}

t.test('every command is in the README\'s command list', async (t) => {
  t.same([...commands].sort(), ['audit', 'bench', 'doctor', 'embed', 'generate', 'grant', 'grants', 'inspect', 'logits', 'profile', 'quantize', 'request', 'revoke', 'serve', 'tokenize', 'trace']);
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const list = /## Commands\n\n```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
  for (const name of commands) t.match(list, new RegExp(`^npx edgellm ${name} `, 'm'), `README lists ${name}`);
});

t.test('a bad command line is one line, exit 2, naming the flag and the help to read, for every command', async (t) => {
  for (const name of commands) {
    // Commander checks required options before unknown ones: either is the one line.
    const r = await runHere([name, '--no-such-flag']);
    oneLine(t, r, new RegExp(`^edgellm: E_BAD_ARGUMENT: (unknown option '--no-such-flag'|required option '.*' not specified): see \`edgellm ${name} --help\`\\n$`), name);
  }
  oneLine(t, run(['inspect', 'x.gguf', '--no-such-flag']), /^edgellm: E_BAD_ARGUMENT: unknown option '--no-such-flag': see `edgellm inspect --help`$/m, 'unknown option');
  const typo = await runHere(['generate', '-m', 'x', '-p', 'y', '--temprature', '0']);
  oneLine(t, typo, /unknown option '--temprature' \(Did you mean --temperature\?\)/, 'commander\'s own suggestion is kept');
  oneLine(t, run(['frobnicate']), /^edgellm: E_BAD_ARGUMENT: unknown command 'frobnicate': see `edgellm --help`$/m, 'unknown command');
});

t.test('missing options, arguments and values are one line and exit 2', async (t) => {
  for (const [args, re] of [
    [['generate', '-p', 'x'], /required option '-m, --model <file>' not specified: see `edgellm generate --help`/],
    [['profile', '-m', 'x'], /required option '-p, --prompt <text>' not specified/],
    [['logits', '-m', 'x'], /required option '--tokens <ids>' not specified/],
    [['quantize', 'a.gguf', 'b.gguf'], /required option '--type <type>' not specified: see `edgellm quantize --help`/],
    [['inspect'], /missing required argument 'file': see `edgellm inspect --help`/],
    [['tokenize', '-m', 'x'], /missing required argument 'text'/],
    [['grant'], /missing required argument 'device'/],
    [['revoke'], /missing required argument 'device'/],
    [['generate', '-m', 'x', '-p', 'y', '-n'], /option '-n, --max-tokens <n>' argument missing/],
    [['inspect', 'a.gguf', 'b.gguf'], /too many arguments for 'inspect'/],
    [['generate', '-m', 'x', '-p', 'y', '-n', 'lots'], /E_BAD_ARGUMENT: -n takes a positive whole number, got "lots"/],
    [['doctor', '--sequences', '0'], /E_BAD_ARGUMENT: --sequences takes a positive whole number/],
    [['request', '-p', 'hi', '-n', 'many'], /E_BAD_ARGUMENT: --max-tokens takes a number, got "many"/],
    [['serve', '--log-level', 'loud', '--print-config'], /E_CONFIG: key "log\.level" \(from --log-level\) must be one of error, warn, info, debug/],
    [['serve', '--embedded-broker-port', '70000', '--print-config'], /E_CONFIG: key "broker\.embedded\.port" \(from --embedded-broker-port\)/],
  ] as Array<[string[], RegExp]>) {
    oneLine(t, await runHere(args), re, args.join(' '));
  }
  oneLine(t, run(['quantize', 'a.gguf', 'b.gguf']), /^edgellm: E_BAD_ARGUMENT: required option '--type <type>' not specified: see `edgellm quantize --help`$/m, 'the built CLI');
});

t.test('every command\'s --help ends with examples of itself', async (t) => {
  // In-process (the machine may be busy: a spawn each would take seconds); one spawn below shows the real CLI prints it.
  for (const cmd of buildProgram().commands) {
    const name = cmd.name();
    let out = '';
    cmd.configureOutput({ writeOut: (s) => (out += s) });
    cmd.outputHelp();
    const m = /\nExamples:\n((?: {2}\$ .*\n)+)$/.exec(out);
    t.ok(m, `${name} --help ends with an Examples block`);
    const lines = m?.[1]?.trim().split('\n') ?? [];
    t.ok(lines.length >= 1 && lines.length <= 3, `${name}: 1-3 examples`);
    for (const line of lines) t.match(line, new RegExp(`^\\s*\\$ edgellm ${name} `), `${name}: ${line}`);
  }
  const r = run(['generate', '--help']);
  t.equal(r.status, 0);
  t.match(r.stdout, /\nExamples:\n {2}\$ edgellm generate -m model\.gguf .*\n(?: {2}\$ edgellm generate .*\n)*$/);
});

t.test('serve --prefix, --embedded-broker-port and --log-level set their config keys', async (t) => {
  const r = runWithEnv(['serve', '--print-config', '--prefix', 'plant7', '--embedded-broker-port', '18830', '--log-level', 'debug', '--state-dir', dir], {});
  t.equal(r.status, 0, r.stderr);
  const config = parseYaml(r.stdout) as { prefix: string; broker: { embedded: { port: number } }; log: { level: string } };
  t.equal(config.prefix, 'plant7');
  t.equal(config.broker.embedded.port, 18830);
  t.equal(config.log.level, 'debug');
});

t.test('the suggestion: nearest names by edit distance, nothing for unrelated names', async (t) => {
  t.equal(editDistance('EMBEDED', 'EMBEDDED'), 1);
  t.equal(editDistance('modle', 'model'), 1, 'a swap of neighbours is one edit');
  t.equal(editDistance('', 'abc'), 3);
  t.same(similarNames('EDGELLM_BROKER_EMBEDED_PORT', ['EDGELLM_BROKER_EMBEDDED_PORT', 'EDGELLM_BROKER_EMBEDDED_HOST', 'EDGELLM_MODEL']), ['EDGELLM_BROKER_EMBEDDED_PORT']);
  t.same(similarNames('xyz', ['model', 'prefix']), []);
  t.equal(didYouMean('modle', ['model', 'models']), 'did you mean model?');
  t.equal(didYouMean('zzzzzz', ['model']), '');
});

t.test('an unknown EDGELLM_* variable is a warning with the real name it is closest to', async (t) => {
  t.same(unknownEnvironmentWarnings({ EDGELLM_MODEL: 'x', EDGELLM_ADDON: 'y', EDGELLM_KERNELS: 'avx2', PATH: '/bin' }), [], 'config keys and engine switches are known');
  const [w] = unknownEnvironmentWarnings({ EDGELLM_BROKER_EMBEDED_PORT: '1884' });
  t.equal(w, 'EDGELLM_BROKER_EMBEDED_PORT is not a variable edgellm reads, so it is ignored: did you mean EDGELLM_BROKER_EMBEDDED_PORT?');
  const r = runWithEnv(['serve', '--print-config', '--state-dir', dir], { EDGELLM_BROKER_EMBEDED_PORT: '1884', EDGELLM_LOG_LEVL: 'debug' });
  t.equal(r.status, 0, r.stderr);
  t.equal(
    r.stderr,
    'edgellm: warning: EDGELLM_BROKER_EMBEDED_PORT is not a variable edgellm reads, so it is ignored: did you mean EDGELLM_BROKER_EMBEDDED_PORT?\n' +
      'edgellm: warning: EDGELLM_LOG_LEVL is not a variable edgellm reads, so it is ignored: did you mean EDGELLM_LOG_LEVEL?\n',
  );
  t.equal(runWithEnv(['serve', '--print-config', '--state-dir', dir], { EDGELLM_LOG_LEVEL: 'debug' }).stderr, '', 'a real one: no warning');
});

t.test('an unknown config key is refused with the key it is closest to', async (t) => {
  const file = join(dir, 'typo.yaml');
  writeFileSync(file, 'modle: m.gguf\nbroker:\n  embeded:\n    port: 1884\naccess:\n  roles:\n    ops:\n      max_token: 5\n');
  const err = (() => {
    try {
      loadConfig({ file, env: {} });
    } catch (e) {
      return e as { code: string; message: string };
    }
    return undefined;
  })();
  t.equal(err?.code, 'E_CONFIG');
  t.match(err?.message, `unknown key "modle" (from ${file}) (did you mean "model"?)`);
  t.match(err?.message, `unknown key "broker.embeded" (from ${file}) (did you mean "broker.embedded"?)`);
  t.match(err?.message, `unknown key "access.roles.ops.max_token" (from ${file}) (did you mean "access.roles.ops.max_tokens"?)`, 'inside a record too');
  writeFileSync(file, 'frobnication: 3\n');
  t.throws(() => loadConfig({ file, env: {} }), { message: `unknown key "frobnication" (from ${file})` }, 'nothing close: no suggestion');
  const r = runWithEnv(['doctor', '-c', join(dir, 'typo.yaml')], {});
  oneLine(t, r, /E_CONFIG: unknown key "frobnication"/, 'doctor -c reads the config');
});

t.test('Ctrl-C during a long command: status 130 at once, as the shell reports a SIGINT', async (t) => {
  // bench kernels measures for --min-seconds per row on libuv's pool: SIGINT must not wait for it.
  const child = spawn(process.execPath, [cli, 'bench', 'kernels', '--threads', '1', '--shapes', '64x256', '--min-seconds', '30', '--working-set-mb', '8']);
  await new Promise((r) => setTimeout(r, 1000));
  const t0 = Date.now();
  child.kill('SIGINT');
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((res) => child.on('close', (c, s) => res([c, s])));
  t.equal(signal, 'SIGINT', `ended by SIGINT (shell status 130), got code ${code}`);
  t.ok(Date.now() - t0 < 5000, `within 5 s of Ctrl-C (${Date.now() - t0} ms), not after the 30 s measurement`);
  const shell = spawnSync('bash', ['-c', `${process.execPath} ${cli} bench kernels --threads 1 --shapes 64x256 --min-seconds 30 --working-set-mb 8 & p=$!; sleep 1; kill -INT $p; wait $p; echo $?`], { encoding: 'utf8', cwd: root });
  t.equal(shell.stdout.trim(), '130', 'the shell sees 130');
});
