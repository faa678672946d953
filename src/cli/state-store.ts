/**
 * The daemon's database as the operator commands (grant, revoke, grants, audit) open it: state_dir
 * from --state-dir, else the --config file, else EDGELLM_STATE_DIR or the default, through the same
 * loadConfig as `edgellm serve`. The database must already exist (the daemon creates it).
 */
import type { Command } from 'commander';
import { userInfo } from 'node:os';
import { loadConfig, type DaemonConfig } from '../config.js';
import { EdgeError } from '../errors.js';
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

/**
 * Opens the daemon's existing database, runs fn and closes it. SQLite failures on the way (the
 * daemon holding a write lock past busy_timeout, a read-only file) become E_STORE saying what to do.
 */
export function withStateStore<T>(config: DaemonConfig, fn: (store: Store) => T): T {
  const store = Store.open(config.state_dir, { cacheEntries: config.cache.max_entries, create: false, auditPrompts: config.audit.store_prompts });
  try {
    return fn(store);
  } catch (err) {
    if (err instanceof EdgeError || !/^SQLITE_/.test(String((err as { code?: unknown }).code))) throw err;
    throw new EdgeError('E_STORE', `the database in ${config.state_dir} refused: ${(err as Error).message}${storeHint(err as Error & { code: string })}`, { cause: err });
  } finally {
    store.close();
  }
}

function storeHint(err: { code: string }): string {
  if (err.code.startsWith('SQLITE_BUSY') || err.code.startsWith('SQLITE_LOCKED')) return ' (another process held a write lock for more than 5 s: try again)';
  if (err.code.startsWith('SQLITE_READONLY') || err.code.startsWith('SQLITE_CANTOPEN') || err.code.startsWith('SQLITE_PERM')) {
    return " (run as the daemon's user, e.g. sudo -u edgellm, or as root)";
  }
  return '';
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
