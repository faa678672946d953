// A plant's broker as production runs one: mosquitto over TLS that wants a client certificate and a
// user name + password. `edgellm serve --broker mqtts://...` and `edgellm request` both get in with
// them, and a client without them is refused with a clear E_BROKER.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findMosquitto, freePort } from '../helpers/broker.js';
import { requires, ServeProcess } from '../helpers/serve.js';
import { assertCliBuilt, cli } from '../fixtures/paths.js';

const mosquitto = findMosquitto();
const hasOpenssl = spawnSync('openssl', ['version']).error === undefined;
const hasPasswd = spawnSync('mosquitto_passwd', ['-h']).error === undefined;
const needs = requires(
  'broker-auth.test',
  mosquitto !== undefined && hasOpenssl && hasPasswd,
  'the TLS + password broker test needs mosquitto, mosquitto_passwd (apt-get install mosquitto) and openssl',
);

t.before(assertCliBuilt);
const dir = mkdtempSync(join(tmpdir(), 'edgellm-broker-auth-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const f = (name: string) => join(dir, name);

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed:\n${r.stderr}`);
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA. */
function makeCertificates(): void {
  sh('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=edgellm test CA', '-keyout', 'ca.key', '-out', 'ca.pem']);
  writeFileSync(f('server.ext'), 'subjectAltName=IP:127.0.0.1\n');
  for (const [name, cn, ext] of [['server', '127.0.0.1', true], ['client', 'press-4', false]] as const) {
    sh('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', `${name}.key`, '-out', `${name}.csr`]);
    sh('openssl', ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', `${name}.pem`, ...(ext ? ['-extfile', 'server.ext'] : [])]);
  }
}

function request(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [cli, 'request', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

t.test('serve and request reach a TLS broker that wants a client certificate and a password; others are refused', needs, async (t) => {
  makeCertificates();
  sh('mosquitto_passwd', ['-b', '-c', 'passwd', 'edgellm', 'node-secret-7']);
  sh('mosquitto_passwd', ['-b', 'passwd', 'press-4', 'device-secret-9']);
  writeFileSync(f('node.pw'), 'node-secret-7\n');
  writeFileSync(f('device.pw'), 'device-secret-9\n');
  writeFileSync(f('wrong.pw'), 'guess\n');
  // mosquitto started as root drops to its own user: it must be able to read these (test-only secrets).
  chmodSync(dir, 0o755);
  for (const name of readdirSync(dir)) chmodSync(f(name), 0o644);
  const port = await freePort();
  writeFileSync(
    f('mosquitto.conf'),
    [
      `listener ${port} 127.0.0.1`,
      `cafile ${f('ca.pem')}`,
      `certfile ${f('server.pem')}`,
      `keyfile ${f('server.key')}`,
      'require_certificate true',
      'allow_anonymous false',
      `password_file ${f('passwd')}`,
      '',
    ].join('\n'),
  );
  const broker = spawn(mosquitto!, ['-c', f('mosquitto.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let brokerLog = '';
  broker.stderr.on('data', (d: Buffer) => (brokerLog += d.toString()));
  t.teardown(() => {
    broker.kill('SIGTERM');
  });
  const url = `mqtts://127.0.0.1:${port}`;
  writeFileSync(
    f('config.yaml'),
    [
      'node_id: tls-node',
      `state_dir: ${f('state')}`,
      'broker:',
      `  url: ${url}`,
      '  username: edgellm',
      `  password_file: ${f('node.pw')}`,
      '  tls:',
      `    ca_file: ${f('ca.pem')}`,
      `    cert_file: ${f('client.pem')}`,
      `    key_file: ${f('client.key')}`,
      '',
    ].join('\n'),
  );
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('EDGELLM_')) delete env[k];
  const daemon = new ServeProcess(process.execPath, [cli, 'serve', '--demo', '--config', f('config.yaml')], env);
  t.teardown(() => daemon.kill());
  await daemon.waitForLog(/try it: [^\n]*\n/, 60_000).catch((err: Error) => {
    throw new Error(`${err.message}\nmosquitto:\n${brokerLog}`);
  });
  t.match(daemon.log, new RegExp(`connected to mqtts://127\\.0\\.0\\.1:${port} as edgellm-tls-node`));
  t.match(daemon.log, new RegExp(`try it: npx edgellm request -p Hello --broker mqtts://127\\.0\\.0\\.1:${port} --username edgellm --password-file FILE --ca-file ${f('ca.pem')} --cert-file CERT --key-file KEY"`));
  t.notMatch(daemon.log, /node-secret-7/, 'the password is never logged');

  const tls = ['--ca-file', f('ca.pem'), '--cert-file', f('client.pem'), '--key-file', f('client.key')];
  const ok = await request(['-p', 'Hello', '--broker', url, '--username', 'press-4', '--password-file', f('device.pw'), ...tls, '--max-tokens', '5', '--json']);
  t.equal(ok.status, 0, ok.stderr);
  t.match(JSON.parse(ok.stdout), { type: 'done', node: 'tls-node', model: 'edgellm-demo' }, 'answered over TLS with a client certificate and a password');

  const wrongPassword = await request(['-p', 'Hello', '--broker', url, '--username', 'press-4', '--password-file', f('wrong.pw'), ...tls]);
  t.equal(wrongPassword.status, 2);
  t.match(wrongPassword.stderr, new RegExp(`^edgellm: E_BROKER: the MQTT broker at mqtts://127\\.0\\.0\\.1:${port} refused the connection: .*(check --username / --password-file)`));
  t.notMatch(wrongPassword.stderr, /guess/);

  const noCertificate = await request(['-p', 'Hello', '--broker', url, '--username', 'press-4', '--password-file', f('device.pw'), '--ca-file', f('ca.pem'), '--timeout', '10']);
  t.equal(noCertificate.status, 2);
  t.match(noCertificate.stderr, /^edgellm: E_BROKER: the MQTT broker at mqtts:\S+ wants a client certificate: pass --cert-file and --key-file/, 'no client certificate: refused by the broker');
  t.equal(noCertificate.stderr.trim().split('\n').length, 1, 'one line, no stack trace');

  const untrusted = await request(['-p', 'Hello', '--broker', url, '--username', 'press-4', '--password-file', f('device.pw'), '--cert-file', f('client.pem'), '--key-file', f('client.key'), '--timeout', '10']);
  t.equal(untrusted.status, 2);
  t.match(untrusted.stderr, /^edgellm: E_BROKER: cannot reach the MQTT broker at mqtts:\S+ its certificate does not verify \(self[- ]signed certificate in certificate chain\); pass the CA that signed it with --ca-file/, 'a broker certificate this client cannot verify is refused');

  t.equal((await daemon.stop()).code, 0);
});
