// For the operator-command tests (grant-cli, audit-cli): a state dir whose database a "daemon" (a
// Store and an AccessControl in the test's process) holds open while the built CLI runs beside it.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AccessControl } from '../../src/policy/access.js';
import type { AuditRecord } from '../../src/policy/audit.js';
import { Store } from '../../src/store/index.js';
import { cli, root, type TapTest } from '../fixtures/paths.js';

export function daemonState(t: TapTest) {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-state-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const stateDir = join(dir, 'state');
  const store = Store.open(stateDir, { cacheEntries: 10 });
  t.teardown(() => store.close());
  return { dir, stateDir, store, access: localCloudAccess(store) };
}

/** Access control with two roles, "local" (every device's default) and "cloud", reading the store's grants. */
export function localCloudAccess(store: Store): AccessControl {
  return new AccessControl({
    config: {
      roles: { local: { models: ['*'], routes: ['local'] }, cloud: { models: ['*'], routes: ['local', 'cloud'] } },
      devices: {},
      default_role: 'local',
    },
    grants: store.grants,
  });
}

/** The built CLI with extra environment variables. */
export function runEnv(args: string[], env: Record<string, string>) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', cwd: root, env: { ...process.env, ...env } });
}

/** `--json` output: one object per line. */
export const jsonLines = (text: string) =>
  text.trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { seq: number } & AuditRecord);
