/**
 * The daemon's one configuration schema: every key with its type, default and meaning. Values come from
 * a YAML/JSON file, then EDGELLM_* variables, then command-line flags; later sources win.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { EdgeError } from '../errors.js';
import { describeIssues } from '../validation.js';

const wholeAtLeast = (min: number) =>
  z.number({ error: `must be a whole number >= ${min}` }).int(`must be a whole number >= ${min}`).min(min, `must be a whole number >= ${min}`);
const text = z.string({ error: 'must be text' }).min(1, 'must not be empty');
/** MQTT topic levels may not contain wildcards or slashes where one level is meant. */
const topicLevel = text.regex(/^[^/+#\u0000]+$/, 'must be one topic level (no "/", "+" or "#")');

const tls = z
  .object({
    ca_file: text.optional().describe('PEM file of the CA(s) that signed the broker certificate'),
    cert_file: text.optional().describe('PEM client certificate, for brokers that authenticate clients by certificate'),
    key_file: text.optional().describe('PEM private key of cert_file'),
    reject_unauthorized: z.boolean({ error: 'must be true or false' }).default(true).describe('refuse brokers whose certificate does not verify'),
  })
  .strict();

const broker = z
  .object({
    url: text.optional().describe('broker URL: mqtt://, mqtts://, ws:// or wss://; unset = edgellm runs its own broker (broker.embedded)'),
    username: text.optional().describe('user name for the broker'),
    password_file: text.optional().describe('file holding the broker password (first line); keeps the secret out of this config'),
    client_id: text.optional().describe('MQTT client id (default: edgellm-<node_id>); must be unique per node'),
    session_expiry_s: wholeAtLeast(1).default(86400).describe('how long the broker keeps this node\'s session and queued requests while it is offline'),
    keepalive_s: wholeAtLeast(5).default(30).describe('MQTT keepalive'),
    tls: tls.prefault({}),
    embedded: z
      .object({
        host: text.default('127.0.0.1').describe('address the embedded broker listens on when broker.url is unset (loopback: only this machine); it has no authentication'),
        port: wholeAtLeast(1).max(65535, 'must be a port from 1 to 65535').default(1883).describe('port of the embedded broker'),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export const configSchema = z
  .object({
    broker: broker.prefault({}),
    prefix: topicLevel.default('edgellm').describe('first topic level of every topic edgellm uses'),
    node_id: topicLevel.default(hostname()).describe('this node\'s name in status/metrics topics and replies (default: the host name)'),
    state_dir: text.default('/var/lib/edgellm').describe('directory of the SQLite database (requests, outbox, cache)'),
    model: text.optional().describe('GGUF model file to serve'),
    models: z.array(text, { error: 'must be a list of model files' }).default([]).describe('more GGUF model files to serve; a request picks one by name (file name without .gguf)'),
    fleet: z
      .object({
        group: topicLevel.optional().describe('share requests with the other nodes of this group ($share/<group>/...): each request goes to one node'),
      })
      .strict()
      .prefault({}),
    batch: z
      .object({ max: wholeAtLeast(1).default(4).describe('generations decoded together (each holds a KV cache); more wait in the queue') })
      .strict()
      .prefault({}),
    engine: z
      .object({
        threads: wholeAtLeast(1).optional().describe("threads of each model's pool (default: physical cores, at most 4)"),
        context_size: wholeAtLeast(1).optional().describe("positions per sequence, prompt + answer (default: the model's context, at most 4096)"),
      })
      .strict()
      .prefault({}),
    upstream: z
      .object({
        url: z.string({ error: 'must be text' }).default('').describe('OpenAI-compatible base URL for requests this node should not answer; empty = none. Its API key is the systemd credential upstream-key ($CREDENTIALS_DIRECTORY/upstream-key), never this file'),
      })
      .strict()
      .prefault({}),
    cache: z
      .object({
        enabled: z.boolean({ error: 'must be true or false' }).default(true).describe('answer repeated deterministic requests (temperature 0 or a seed) from SQLite'),
        max_entries: wholeAtLeast(1).default(10000).describe('cached answers kept; the least recently used go first'),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        max_prompt_bytes: wholeAtLeast(1).default(65536).describe('largest prompt (or all messages\' content) in UTF-8 bytes'),
        max_tokens: wholeAtLeast(1).default(1024).describe('most tokens one request may ask for; also the default'),
        queue_depth: wholeAtLeast(1).default(64).describe('requests waiting for a slot; beyond it requests get E_QUEUE_FULL'),
        drain_s: wholeAtLeast(0).default(30).describe('on SIGTERM, how long running generations may finish before they are left for the next start'),
      })
      .strict()
      .prefault({}),
    metrics: z
      .object({ interval_s: wholeAtLeast(1).default(30).describe('how often <prefix>/metrics/<node_id> is published') })
      .strict()
      .prefault({}),
    log: z
      .object({ level: z.enum(['error', 'warn', 'info', 'debug'], { error: 'must be one of error, warn, info, debug' }).default('info') })
      .strict()
      .prefault({}),
  })
  .strict();

export type DaemonConfig = z.infer<typeof configSchema>;

/** Flags of `edgellm serve` that set config keys (commander's camelCase names). */
export interface ConfigFlags {
  broker?: string;
  model?: string;
  fleetGroup?: string;
  stateDir?: string;
  nodeId?: string;
}

const flagKeys: Record<keyof ConfigFlags, [string, string]> = {
  broker: ['broker.url', '--broker'],
  model: ['model', '--model'],
  fleetGroup: ['fleet.group', '--fleet-group'],
  stateDir: ['state_dir', '--state-dir'],
  nodeId: ['node_id', '--node-id'],
};

type Leaf = { path: string[]; kind: 'string' | 'number' | 'boolean' | 'list' | 'enum' };

interface Def {
  type: string;
  innerType?: z.ZodType;
  shape?: Record<string, z.ZodType>;
}
const defOf = (s: z.ZodType): Def => (s as unknown as { _zod: { def: Def } })._zod.def;

/** Every settable key of the schema, found by walking it (so the variables can never drift from it). */
function leaves(schema: z.ZodType, path: string[] = []): Leaf[] {
  const def = defOf(schema);
  if (def.type === 'optional' || def.type === 'default' || def.type === 'prefault') return leaves(def.innerType!, path);
  if (def.type === 'object') {
    return Object.entries(def.shape!).flatMap(([k, v]) => leaves(v, [...path, k]));
  }
  const kind = def.type === 'array' ? 'list' : def.type === 'enum' ? 'enum' : (def.type as Leaf['kind']);
  return [{ path, kind }];
}

export const envName = (path: string[]) => 'EDGELLM_' + path.join('_').toUpperCase();

function setPath(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let o = obj;
  for (const p of path.slice(0, -1)) {
    if (typeof o[p] !== 'object' || o[p] === null || Array.isArray(o[p])) o[p] = {};
    o = o[p] as Record<string, unknown>;
  }
  o[path[path.length - 1]!] = value;
}

function fromEnvText(kind: Leaf['kind'], raw: string): unknown {
  if (kind === 'number') return raw.trim() !== '' && Number.isFinite(Number(raw)) ? Number(raw) : raw;
  if (kind === 'boolean') return ({ true: true, '1': true, false: false, '0': false } as Record<string, boolean>)[raw.trim().toLowerCase()] ?? raw;
  if (kind === 'list') return raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
  return raw;
}

/**
 * The effective config: defaults < file < EDGELLM_* variables < flags. Errors are E_CONFIG and name the
 * key, where its value came from and what it takes.
 */
export function loadConfig(opts: { file?: string; env?: NodeJS.ProcessEnv; flags?: ConfigFlags } = {}): DaemonConfig {
  const env = opts.env ?? process.env;
  const sources = new Map<string, string>();
  let raw: Record<string, unknown> = {};
  if (opts.file) {
    let content: string;
    try {
      content = readFileSync(opts.file, 'utf8');
    } catch (err) {
      throw new EdgeError('E_CONFIG', `cannot read the config file ${opts.file}: ${(err as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = parseYaml(content);
    } catch (err) {
      throw new EdgeError('E_CONFIG', `${opts.file} is not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`);
    }
    if (parsed !== null && parsed !== undefined) {
      if (typeof parsed !== 'object' || Array.isArray(parsed)) {
        throw new EdgeError('E_CONFIG', `${opts.file} must hold a mapping of keys (such as broker: and model:), not ${Array.isArray(parsed) ? 'a list' : typeof parsed}`);
      }
      raw = parsed as Record<string, unknown>;
    }
  }
  for (const leaf of leaves(configSchema)) {
    const name = envName(leaf.path);
    const value = env[name];
    if (value === undefined || value === '') continue;
    setPath(raw, leaf.path, fromEnvText(leaf.kind, value));
    sources.set(leaf.path.join('.'), name);
  }
  for (const [flag, [key, flagName]] of Object.entries(flagKeys) as Array<[keyof ConfigFlags, [string, string]]>) {
    const value = opts.flags?.[flag];
    if (value === undefined) continue;
    setPath(raw, key.split('.'), value);
    sources.set(key, flagName);
  }
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const where = (p: string) => {
      const src = sources.get(p) ?? (opts.file && p !== '' ? opts.file : undefined);
      return src ? ` (from ${src})` : '';
    };
    throw new EdgeError('E_CONFIG', describeIssues(result.error.issues, raw, 'key', where).join('; '));
  }
  return result.data;
}

/** The config as `--print-config` shows it: secrets (a password inside the broker URL) masked. */
export function maskSecrets(config: DaemonConfig): DaemonConfig {
  const copy = structuredClone(config);
  if (copy.broker.url === undefined) return copy;
  try {
    const url = new URL(copy.broker.url);
    if (url.password) {
      url.password = '****';
      copy.broker.url = url.toString();
    }
  } catch {
    // not a URL we can parse: the broker will say so when we connect
  }
  return copy;
}

/** Model files to serve, by the name a request uses for them. */
export function modelFiles(config: DaemonConfig): Map<string, string> {
  const files = new Map<string, string>();
  for (const path of [...(config.model ? [config.model] : []), ...config.models]) {
    const name = basename(path).replace(/\.gguf$/i, '');
    if (files.has(name) && files.get(name) !== path) {
      throw new EdgeError('E_CONFIG', `two models are named "${name}" (${files.get(name)} and ${path}): rename one file`);
    }
    files.set(name, path);
  }
  return files;
}

/** The broker password from broker.password_file (first line), if one is configured. */
export function readBrokerPassword(config: DaemonConfig): string | undefined {
  const file = config.broker.password_file;
  if (!file) return undefined;
  try {
    return readFileSync(file, 'utf8').split(/\r?\n/)[0];
  } catch (err) {
    throw new EdgeError('E_CONFIG', `broker.password_file: cannot read ${file}: ${(err as Error).message}`);
  }
}

/**
 * The upstream API key: systemd hands it over as the credential upstream-key
 * ($CREDENTIALS_DIRECTORY/upstream-key; the unit's fallback is a blank one). undefined when no upstream
 * is configured, outside systemd, or when the key is blank: then there is no upstream. Never logged.
 */
export function readUpstreamKey(config: DaemonConfig, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (config.upstream.url.trim() === '') return undefined;
  const dir = env.CREDENTIALS_DIRECTORY;
  if (!dir) return undefined;
  const file = join(dir, 'upstream-key');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new EdgeError('E_CONFIG', `cannot read the upstream key ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const key = text.trim();
  return key === '' ? undefined : key;
}
