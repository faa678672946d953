/**
 * `edgellm grant DEVICE ROLE --for 2h`, `edgellm revoke DEVICE [ROLE]` and `edgellm grants`:
 * temporary roles in the daemon's SQLite database. The running daemon reads grants on every
 * request, so they take effect on its next one without a restart. Each grant and revoke is
 * committed together with its audit record (who: the OS user).
 */
import type { Command } from 'commander';
import type { Grant } from '../policy/access.js';
import type { DaemonConfig } from '../config.js';
import { EdgeError } from '../errors.js';
import { formatDuration, isoSeconds, parseDuration } from './duration.js';
import { loadStateConfig, operatorName, stateOptions, withStateStore, type StateFlags } from './state-store.js';
import { table } from './table.js';
import { withExamples } from './help.js';

/** Grants are temporary: a role for longer belongs in access.devices of the config. */
const MAX_GRANT_MS = 365 * 86_400_000;

interface GrantFlags extends StateFlags {
  for?: string;
}

interface ListFlags extends StateFlags {
  device?: string;
  json?: boolean;
}

/** The roles the config defines: access.roles once the policy config is in the schema, else the shipped default. */
export function configuredRoles(config: DaemonConfig): string[] {
  return Object.keys(config.access.roles);
}

/** A grant names one device, as it appears in its topic level: no wildcards, no slashes. */
function checkDevice(device: string): void {
  if (device.trim() === '' || /[*?#+/\u0000]/.test(device)) {
    throw new EdgeError('E_BAD_ARGUMENT', `"${device}" is not a device id: name one device, as in its topic <prefix>/request/<device> (no wildcards or slashes)`);
  }
}

export function registerGrant(program: Command): void {
  stateOptions(
    withExamples(program.command('grant'), [
      ['edgellm grant press-4 cloud --for 2h -c config.yaml', 'role cloud for two hours'],
    ])
      .description('give DEVICE the role ROLE for a while (the running daemon applies it to the next request)')
      .argument('<device>', 'device id (its topic level)')
      .argument('<role>', 'a role of access.roles in the config')
      .option('--for <duration>', 'how long: 30m, 2h, 1d, 1h30m (at most 365d)'),
  ).action((device: string, role: string, flags: GrantFlags) => {
    checkDevice(device);
    if (flags.for === undefined) throw new EdgeError('E_BAD_ARGUMENT', 'a grant needs --for DURATION (e.g. --for 2h): grants are temporary; a lasting role belongs in access.devices of the config');
    const ttl = parseDuration('--for', flags.for, MAX_GRANT_MS);
    const config = loadStateConfig(flags);
    if (flags.config !== undefined) {
      const roles = configuredRoles(config);
      if (!roles.includes(role)) {
        throw new EdgeError('E_BAD_ARGUMENT', `there is no role "${role}" in access.roles of ${flags.config}: use one of ${roles.join(', ')}`);
      }
    }
    withStateStore(config, (store) => {
      const at = Date.now();
      const by = operatorName();
      const grant: Grant = { device, role, granted_at: at, expires_at: at + ttl, by };
      const replaced = store.atomically(() => {
        const before = store.grants.active(device, at).find((g) => g.role === role);
        store.grants.add(grant);
        store.audit.append({ type: 'grant', time: at, device, role, expires_at: grant.expires_at, by });
        return before;
      }, { immediate: true });
      const was = replaced ? ` (replacing the grant that ran until ${isoSeconds(replaced.expires_at)})` : '';
      process.stdout.write(`granted ${role} to ${device} until ${isoSeconds(grant.expires_at)} (${formatDuration(ttl)} from now)${was}\n`);
      if (flags.config === undefined) {
        process.stderr.write(`note: without --config the role "${role}" was not checked against access.roles; the daemon ignores grants of roles its config does not define\n`);
      }
    });
  });

  stateOptions(
    withExamples(program.command('revoke'), [
      ['edgellm revoke press-4 cloud -c config.yaml', 'end press-4\'s grant of cloud'],
      ['edgellm revoke press-4 -c config.yaml', 'end all of press-4\'s grants'],
    ])
      .description("end DEVICE's grants at once: of ROLE, or every role when ROLE is left out")
      .argument('<device>', 'device id')
      .argument('[role]', 'the granted role (default: all of the device\'s grants)'),
  ).action((device: string, role: string | undefined, flags: StateFlags) => {
    checkDevice(device);
    withStateStore(loadStateConfig(flags), (store) => {
      const at = Date.now();
      const by = operatorName();
      const ended = store.atomically(() => {
        const roles = store.grants.active(device, at).map((g) => g.role).filter((r) => role === undefined || r === role);
        const n = store.grants.revoke(device, role, at);
        store.audit.append({ type: 'revoke', time: at, device, role: role ?? '*', removed: n, by });
        return roles;
      }, { immediate: true });
      let message: string;
      if (ended.length === 0) message = `${device} had no active grant${role !== undefined ? ` of ${role}` : ''}: nothing revoked`;
      else if (role !== undefined) message = `revoked ${device}'s grant of ${role}`;
      else message = `revoked ${ended.length} active grant${ended.length === 1 ? '' : 's'} of ${device} (${ended.join(', ')})`;
      process.stdout.write(`${message}\n`);
    });
  });

  stateOptions(
    withExamples(program.command('grants'), [
      ['edgellm grants -c config.yaml', 'every active grant'],
      ['edgellm grants --device press-4 --json -c config.yaml', 'one device\'s, as JSON'],
    ])
      .description('list the grants active now')
      .option('--device <device>', 'only this device')
      .option('--json', 'one JSON object per line'),
  ).action((flags: ListFlags) => {
    withStateStore(loadStateConfig(flags), (store) => {
      const at = Date.now();
      const grants = flags.device !== undefined ? store.grants.active(flags.device, at) : store.grants.list(at);
      if (flags.json) {
        for (const g of grants) process.stdout.write(`${JSON.stringify(g)}\n`);
        return;
      }
      if (grants.length === 0) {
        process.stdout.write(flags.device !== undefined ? `no active grants for ${flags.device}\n` : 'no active grants\n');
        return;
      }
      const rows = grants.map((g) => [g.device, g.role, isoSeconds(g.expires_at), formatDuration(g.expires_at - at), g.by ?? '']);
      process.stdout.write(table(['DEVICE', 'ROLE', 'EXPIRES', 'LEFT', 'BY'], rows));
    });
  });
}
