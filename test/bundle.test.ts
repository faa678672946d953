// The offline bundle as a Pi receives it: built by scripts/bundle-offline.sh, installed by its own
// install-offline.sh into a --root tree, and run from there (arm64 under qemu as a Cortex-A76).
// Slow (it builds two bundles), so it is `npm run test:bundle`, not part of `tap`'s default run;
// scripts/test.sh runs it.
import t, { type Test } from 'tap';
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import {
  appendFileSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Broker, findMosquitto } from './helpers/broker.js';
import { Device } from './helpers/device.js';
import { hasStories, ServeProcess, stories, STORIES_CONTINUATION } from './helpers/serve.js';

const root = resolve(fileURLToPath(import.meta.url), '..', '..');
const underCi = process.env.CI === 'true';
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
const benchArgs = ['bench', 'kernels', '--threads', '1', '--shapes', '64x256', '--min-seconds', '0.01', '--working-set-mb', '8'];

const work = mkdtempSync(join(tmpdir(), 'edgellm-bundle-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
// The model the x64 bundle carries (bundle-offline.sh --model) and the installer checks with the
// bundled `edgellm inspect` before it enables the service.
const model = stories;

function sh(cmd: string, args: string[], opts: SpawnSyncOptions = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  return { status: r.status, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), error: r.error };
}
const has = (cmd: string, args = ['--version']) => sh(cmd, args).status === 0;

/** A loud skip outside CI; under CI=true the test runs (and fails) because CI installs everything. */
function requires(ok: boolean, missing: string): { skip: string | false } {
  if (ok || underCi) return { skip: false };
  process.stderr.write(`bundle.test: SKIPPED: ${missing}\n`);
  return { skip: `SKIPPED: ${missing}` };
}

/** Builds the bundle for arch and unpacks it; returns the unpacked bundle directory. */
function buildBundle(t: Test, arch: 'x64' | 'arm64', extra: string[] = []): string {
  const out = join(work, `out-${arch}`);
  const r = sh('bash', [join(root, 'scripts', 'bundle-offline.sh'), '--arch', arch, '--out', out, ...extra], { cwd: root });
  if (r.status !== 0) t.comment(r.stderr.slice(-4000));
  t.equal(r.status, 0, `bundle-offline.sh --arch ${arch}`);
  const tarball = join(out, `edgellm-${version}-linux-${arch}.tar.gz`);
  t.equal(r.stdout.trim(), tarball, 'prints the tarball it wrote');
  const unpacked = join(work, `unpacked-${arch}`);
  rmSync(unpacked, { recursive: true, force: true });
  cpSync(out, unpacked, { recursive: true });
  t.equal(sh('tar', ['-xzf', tarball, '-C', unpacked]).status, 0, 'the tarball unpacks');
  return join(unpacked, `edgellm-${version}-linux-${arch}`);
}

const mosquitto = findMosquitto();
const needsModel = () => requires(hasStories(), `${stories} (the team's test models beside the repository)`);
const needsBroker = () => requires(mosquitto !== undefined && hasStories(), `mosquitto (apt-get install mosquitto) and ${stories}`);

/**
 * The installed app's `serve` (cmd + args start node with the app) answers one request through a real
 * mosquitto, then stops on SIGTERM with exit 0.
 */
async function serveOnce(t: Test, name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number) {
  const broker = await Broker.start(mosquitto!);
  t.teardown(() => broker.destroy());
  const serveArgs = [...args, 'serve', '--model', stories, '--broker', broker.url, '--state-dir', join(work, `state-${name}`), '--node-id', name];
  const daemon = new ServeProcess(cmd, serveArgs, {
    ...env, EDGELLM_PREFIX: name, EDGELLM_ENGINE_THREADS: '1', EDGELLM_ENGINE_CONTEXT_SIZE: '128', EDGELLM_LOG_LEVEL: 'info',
  });
  t.teardown(() => daemon.kill());
  await daemon.waitForLog(new RegExp(`node ${name} ready`), timeoutMs);
  const device = await Device.connect(broker.url, `${name}-device`, [`${name}/response/#`]);
  t.teardown(() => device.close());
  await device.publish(`${name}/request/press-1`, { id: 'b1', prompt: 'Once upon a time', max_tokens: 8, temperature: 0 });
  const done = await device.final('b1', timeoutMs);
  t.match(done.body, { type: 'done', route: 'local', model: 'stories260K', node: name, usage: { completion_tokens: 8 } }, `${name}: serve answers over MQTT`);
  t.ok(String(done.body.text).startsWith(', there was'), `${name}: the model's text ${JSON.stringify(done.body.text)}`);
  t.same(await daemon.stop(), { code: 0, signal: null }, `${name}: SIGTERM stops it with exit 0`);
}

function install(bundle: string, args: string[]) {
  return sh('bash', [join(bundle, 'install-offline.sh'), ...args]);
}

t.test('the linux-x64 bundle installs into a --root tree and runs from it',
  requires(process.arch === 'x64' && hasStories(), `an x86-64 machine and ${stories}`), async (t) => {
  const bundle = buildBundle(t, 'x64', ['--model', model]);
  for (const f of ['bin/edgellm', 'runtime/bin/node', 'app/dist/cli/main.js', 'app/build/Release/edgellm.node',
    'app/node_modules/commander/package.json', 'systemd/edgellm.service', 'config.yaml', 'install-offline.sh', 'BUNDLE', 'SHA256SUMS',
    'models/stories260K.gguf']) {
    t.ok(existsSync(join(bundle, f)), `bundle has ${f}`);
  }
  t.notOk(existsSync(join(bundle, 'app/node_modules/typescript')), 'no dev dependencies');
  t.match(readFileSync(join(bundle, 'BUNDLE'), 'utf8'), new RegExp(`^version=${version.replaceAll('.', '\\.')}\narch=x64\nnode=v20\\.`));

  const tree = join(work, 'root-x64');
  t.match(readFileSync(join(bundle, 'SHA256SUMS'), 'utf8'), /  models\/stories260K\.gguf$/m, 'the bundled model is checksummed');
  // No --model: the bundle's own model is installed and served.
  const r = install(bundle, ['--root', tree, '--memory-max', '2G', '--cpu-quota', '300%']);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /verified/, 'checksums verified');
  t.match(r.stdout, /the bundle carries the model stories260K\.gguf/);
  t.notOk(existsSync(join(tree, 'opt', 'edgellm', version, 'models')), 'the model is not kept twice (only in state/models)');

  const opt = join(tree, 'opt', 'edgellm');
  t.ok(lstatSync(join(opt, 'current')).isSymbolicLink(), 'current is a symlink');
  t.equal(readlinkSync(join(opt, 'current')), version, `current -> ${version} (relative)`);
  const unit = readFileSync(join(tree, 'etc/systemd/system/edgellm.service'), 'utf8');
  t.match(unit, /^MemoryMax=2G$/m);
  t.match(unit, /^CPUQuota=300%$/m);
  t.notMatch(unit, /@[A-Z_]+@/, 'every placeholder substituted');
  // The installed unit's sandbox, as `systemd-analyze security` rates it (OK is <= 2.5), with
  // V8's JIT allowed (test/systemd.test.ts checks the rating has teeth).
  const rating = sh('systemd-analyze', ['security', '--offline=yes', '--no-pager', join(tree, 'etc/systemd/system/edgellm.service')]);
  const level = /Overall exposure level for edgellm\.service: ([0-9.]+)/.exec(`${rating.stdout}${rating.stderr}`);
  t.ok(level !== null && Number(level[1]) <= 2.5, `systemd-analyze security: ${level?.[1] ?? rating.stderr.trim()} <= 2.5`);
  t.notMatch(unit, /^MemoryDenyWriteExecute=/m, "no MemoryDenyWriteExecute: V8's JIT needs W+X pages");
  t.match(readFileSync(join(tree, 'etc/edgellm/config.yaml'), 'utf8'), /^model: \/var\/lib\/edgellm\/models\/stories260K\.gguf$/m,
    'the new config names the copied model');
  t.same(readFileSync(join(tree, 'var/lib/edgellm/models/stories260K.gguf')), readFileSync(model), 'the model is copied');
  const actions = readFileSync(join(tree, 'edgellm-install.actions'), 'utf8');
  t.match(actions, /^useradd --system .*edgellm$/m, 'records the useradd');
  t.match(actions, /^systemctl daemon-reload\nsystemctl (try-restart edgellm\nsystemctl )?enable --now edgellm$/m, 'records the enable');

  const launcher = join(opt, 'current', 'bin', 'edgellm');
  const v = sh(launcher, ['--version']);
  t.equal(v.status, 0, v.stderr);
  t.equal(v.stdout.trim(), version, 'the installed launcher runs the bundled node and app');
  const b = sh(launcher, benchArgs);
  t.equal(b.status, 0, b.stderr);
  t.match(b.stdout, /gemv_q4_0\s+64x256/, 'the bundled addon runs the kernel bench');
  t.match(sh('file', ['-bL', join(opt, 'current', 'app/node_modules/better-sqlite3/build/Release/better_sqlite3.node')]).stdout, /x86-64/,
    'better-sqlite3 is built for x64');

  await t.test('the installed x64 app generates and serves with stories260K', needsModel(), async (t) => {
    const g = sh(launcher, ['generate', '-m', stories, '-p', 'Once upon a time', '-n', '16', '--temperature', '0'], { timeout: 60_000 });
    t.equal(g.status, 0, g.stderr);
    t.ok(g.stdout.startsWith(STORIES_CONTINUATION), `generate writes the continuation: ${JSON.stringify(g.stdout)}`);
    await t.test('serve', needsBroker(), (t) => serveOnce(t, 'bundlex64', launcher, [], process.env, 60_000));
  });

  // Idempotent: the admin's config survives, nothing is copied twice, --no-enable does not enable.
  appendFileSync(join(tree, 'etc/edgellm/config.yaml'), '# edited by the admin\n');
  const again = install(bundle, ['--root', tree, '--no-enable']);
  t.equal(again.status, 0, again.stderr);
  t.match(again.stdout, /already installed and intact/);
  t.match(readFileSync(join(tree, 'etc/edgellm/config.yaml'), 'utf8'), /# edited by the admin/, 'config kept');
  t.notMatch(readFileSync(join(tree, 'edgellm-install.actions'), 'utf8'), /enable/, '--no-enable');

  // A second version: current switches, previous keeps the first; --rollback swaps them back.
  const next = join(work, 'next-x64', `edgellm-9.9.9-linux-x64`);
  cpSync(bundle, next, { recursive: true });
  writeFileSync(join(next, 'BUNDLE'), readFileSync(join(next, 'BUNDLE'), 'utf8').replace(/^version=.*$/m, 'version=9.9.9'));
  t.equal(sh('bash', ['-c', "find . -type f ! -name SHA256SUMS -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum > SHA256SUMS"], { cwd: next }).status, 0);
  t.equal(install(next, ['--root', tree]).status, 0);
  t.equal(readlinkSync(join(opt, 'current')), '9.9.9', 'upgrade: current -> 9.9.9');
  t.equal(readlinkSync(join(opt, 'previous')), version, `previous -> ${version}`);
  const rb = sh('bash', [join(opt, 'current', 'install-offline.sh'), '--root', tree, '--rollback']);
  t.equal(rb.status, 0, rb.stderr);
  t.equal(readlinkSync(join(opt, 'current')), version, `rollback: current -> ${version}`);
  t.equal(readlinkSync(join(opt, 'previous')), '9.9.9');
  t.match(readFileSync(join(tree, 'edgellm-install.actions'), 'utf8'), /systemctl try-restart edgellm/, 'restarts after a rollback');
  t.equal(sh(launcher, ['--version']).stdout.trim(), version, 'the rolled-back version runs');

  // Never a service without a model it can open: installed, not enabled, exit 3, and what to do.
  const bare = join(work, 'bare-x64');
  cpSync(bundle, bare, { recursive: true });
  rmSync(join(bare, 'models'), { recursive: true });
  t.equal(sh('bash', ['-c', "find . -type f ! -name SHA256SUMS -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum > SHA256SUMS"], { cwd: bare }).status, 0);
  const noModel = install(bare, ['--root', join(work, 'root-nomodel')]);
  t.equal(noModel.status, 3, `no model: exit 3 (${noModel.stderr.trim()})`);
  t.match(noModel.stderr, /installed but NOT enabled: the configured model \/var\/lib\/edgellm\/models\/model\.gguf does not exist/);
  t.match(noModel.stderr, /--model FILE\.gguf/, 'says what to do');
  t.notMatch(readFileSync(join(work, 'root-nomodel', 'edgellm-install.actions'), 'utf8'), /enable/, 'not enabled');
  t.ok(existsSync(join(work, 'root-nomodel', 'opt', 'edgellm', 'current', 'bin', 'edgellm')), 'the program is installed');
  const junk = join(work, 'junk.gguf');
  writeFileSync(junk, 'GGUF but nothing after the magic');
  const badModel = install(bare, ['--root', join(work, 'root-badmodel'), '--model', junk]);
  t.equal(badModel.status, 3, 'a model that does not open: exit 3');
  t.match(badModel.stderr, /the configured model \/var\/lib\/edgellm\/models\/junk\.gguf does not open: edgellm: E_MODEL_(CORRUPT|UNSUPPORTED): /);
  const noEnable = install(bare, ['--root', join(work, 'root-noenable'), '--no-enable']);
  t.equal(noEnable.status, 0, '--no-enable without a model is not an error');
  t.match(noEnable.stdout, /note: the configured model .* does not exist/);

  // A changed file is refused before anything is installed.
  const tampered = join(work, 'tampered-x64');
  cpSync(bundle, tampered, { recursive: true });
  appendFileSync(join(tampered, 'app/dist/cli/main.js'), '\n// changed\n');
  const bad = install(tampered, ['--root', join(work, 'root-tampered')]);
  t.not(bad.status, 0, 'a changed file fails the install');
  t.match(bad.stderr, /checksums do not match/);
  t.notOk(existsSync(join(work, 'root-tampered', 'opt', 'edgellm')), 'nothing installed');

  // --uninstall removes the program and the unit, keeps config and state.
  const un = sh('bash', [join(bundle, 'install-offline.sh'), '--root', tree, '--uninstall']);
  t.equal(un.status, 0, un.stderr);
  t.notOk(existsSync(opt), '/opt/edgellm removed');
  t.notOk(existsSync(join(tree, 'etc/systemd/system/edgellm.service')), 'unit removed');
  t.ok(existsSync(join(tree, 'etc/edgellm/config.yaml')), 'config kept');
  t.ok(existsSync(join(tree, 'var/lib/edgellm/models/stories260K.gguf')), 'models kept');
  t.match(readFileSync(join(tree, 'edgellm-install.actions'), 'utf8'), /systemctl disable --now edgellm/);
});

const crossTools = has('aarch64-linux-gnu-g++') && has('qemu-aarch64') && existsSync('/usr/aarch64-linux-gnu/lib');
t.test('the linux-arm64 bundle installs into a --root tree and runs under qemu as a Cortex-A76',
  requires(crossTools, 'g++-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user build and run the arm64 bundle'), async (t) => {
  const bundle = buildBundle(t, 'arm64');
  for (const f of ['runtime/bin/node', 'app/build/Release/edgellm.node']) {
    t.match(sh('file', ['-bL', join(bundle, f)]).stdout, /ARM aarch64/, `${f} is aarch64`);
  }
  const tree = join(work, 'root-arm64');
  const r = install(bundle, ['--root', tree, '--no-enable']);
  t.equal(r.status, 0, r.stderr);
  const current = join(tree, 'opt', 'edgellm', 'current');
  t.equal(readlinkSync(current), version);

  // bin/edgellm under qemu: the launcher's own command line, with qemu in front of node.
  const qemuArgs = ['-cpu', 'cortex-a76', '-L', '/usr/aarch64-linux-gnu', join(current, 'runtime/bin/node'), join(current, 'app/dist/cli/main.js')];
  const qemu = (args: string[]) =>
    sh('qemu-aarch64', [...qemuArgs, ...args], {
      env: { ...process.env, EDGELLM_ADDON: join(current, 'app/build/Release/edgellm.node') },
      timeout: 180_000,
    });
  const v = qemu(['--version']);
  t.equal(v.status, 0, v.stderr);
  t.equal(v.stdout.trim(), version, 'the arm64 node runs the app');
  const b = qemu(benchArgs);
  t.equal(b.status, 0, b.stderr);
  t.match(b.stdout, /kernels: neon-dotprod/, 'a Cortex-A76 gets the dotprod kernels');
  t.match(b.stdout, /gemv_q4_0\s+64x256/);
  t.match(sh('file', ['-bL', join(current, 'app/node_modules/better-sqlite3/build/Release/better_sqlite3.node')]).stdout, /ARM aarch64/,
    'better-sqlite3 is cross-compiled for aarch64');

  await t.test('the installed arm64 app generates and serves with stories260K under qemu', needsModel(), async (t) => {
    const g = qemu(['generate', '-m', stories, '-p', 'Once upon a time', '-n', '16', '--temperature', '0']);
    t.equal(g.status, 0, g.stderr);
    t.ok(g.stdout.startsWith(STORIES_CONTINUATION), `generate writes the continuation: ${JSON.stringify(g.stdout)}`);
    await t.test('serve', needsBroker(), (t) =>
      serveOnce(t, 'bundlearm64', 'qemu-aarch64', [...qemuArgs], { ...process.env, EDGELLM_ADDON: join(current, 'app/build/Release/edgellm.node') }, 180_000));
  });
});
