/**
 * The daemon's database as the operator commands (grant, revoke, grants, audit) open it: state_dir
 * from --state-dir, else the --config file, else EDGELLM_STATE_DIR or the default, through the same
 * loadConfig as `edgellm serve`. The database must already exist (the daemon creates it).
 */
import type { Command } from 'commander';
import { userInfo } from 'node:os';
import { loadConfig, type DaemonConfig } from '../daemon/config.js';
import { Store } from '../store/index.js';

export interface StateFlags {
  config?: string;
  stateDir?: string;
}

/** --state-dir and --config, the same on every operator command. */
export function stateOptions(cmd: Command): Command {
  return cmd
    .option('--state-dir <dir>', "the daemon's state_dir (default: from --config, EDGELLM_STATE_DIR, or /var/lib/edgellm)")
    .option('-c, --config <file>', "the daemon's config file (its state_dir, and the roles a grant may name)");
}

export function loadStateConfig(flags: StateFlags): DaemonConfig {
  return loadConfig({ ...(flags.config ? { file: flags.config } : {}), flags: flags.stateDir !== undefined ? { stateDir: flags.stateDir } : {} });
}

export function openStateStore(config: DaemonConfig): Store {
  return Store.open(config.state_dir, { cacheEntries: config.cache.max_entries, create: false, auditPrompts: config.audit.store_prompts });
}

/** Who is running this command, for the audit log: the OS user, and the person behind sudo. */
export function operatorName(env: NodeJS.ProcessEnv = process.env): string {
  let user: string;
  try {
    user = userInfo().username;
  } catch {
    user = process.getuid ? `uid ${process.getuid()}` : 'unknown';
  }
  const sudo = env.SUDO_USER;
  return sudo && sudo !== user ? `${sudo} (sudo as ${user})` : user;
}
