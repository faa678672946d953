/**
 * The daemon's one configuration schema: every key with its type, default and meaning. Values come from
 * a YAML/JSON file, then EDGELLM_* variables, then command-line flags; later sources win.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { EdgeError } from './errors.js';
import { urlUsername } from './net.js';
import { didYouMean } from './suggest.js';
import { describeIssues } from './validation.js';
import { readApiKey, redactUrl, type Secret } from './secret.js';

const wholeAtLeast = (min: number) =>
  z.number({ error: `must be a whole number >= ${min}` }).int(`must be a whole number >= ${min}`).min(min, `must be a whole number >= ${min}`);
const text = z.string({ error: 'must be text' }).min(1, 'must not be empty');
const portNumber = z
  .number({ error: 'must be a port number, 0 to 65535' })
  .int('must be a port number, 0 to 65535')
  .min(0, 'must be a port number, 0 to 65535')
  .max(65535, 'must be a port number, 0 to 65535');
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
    variants: z
      .record(
        text,
        z
          .array(
            z
              .object({
                model: text.describe('a configured model (local or upstream) that answers for this variant'),
                weight: z.number({ error: 'must be a number > 0' }).positive('must be a number > 0').describe("this variant's share of the traffic (the weights of a name are normalized)"),
              })
              .strict(),
            { error: 'must be a list of {model, weight}' },
          )
          .min(1, 'must list at least one variant'),
        { error: 'must map model names to a list of {model, weight}' },
      )
      .default({})
      .describe('A/B variants: a model name a request may ask for -> the models that answer for it, each device sticking to one by a hash of its id'),
    adapters: z
      .record(
        text,
        z.array(
          z
            .object({
              name: topicLevel.describe('what a request names it by (`adapter: NAME`, or model "MODEL+NAME" on the OpenAI endpoint)'),
              path: text.describe("a LoRA adapter file in llama.cpp's GGUF adapter format, for this model"),
              scale: z.number({ error: 'must be a number' }).finite('must be a finite number').default(1).describe('its user scale (1 = as trained, 0 = off)'),
            })
            .strict(),
          { error: 'must be a list of {name, path, scale}' },
        ),
        { error: 'must map local model names to a list of {name, path, scale}' },
      )
      .default({})
      .describe('LoRA adapters per local model: applied at run time per request (`adapter: NAME`), one copy of the base model serving every adapter'),
    fleet: z
      .object({
        group: topicLevel.optional().describe('share requests with the other nodes of this group ($share/<group>/...): each request goes to one node'),
      })
      .strict()
      .prefault({}),
    batch: z
      .object({
        // 64: the engine's step holds at most batchSize (64) tokens, one per decoding sequence.
        max: wholeAtLeast(1).max(64, 'must be a whole number from 1 to 64').default(4).describe('generations decoded together (each holds a KV cache), 1 to 64; more wait in the queue'),
        window_ms: wholeAtLeast(0)
          .max(5000, 'must be a whole number of ms from 0 to 5000')
          .default(0)
          .describe('batching window: while nothing runs, hold arriving requests up to this long (or until batch.max are held) and start them together; 0 = start each at once'),
      })
      .strict()
      .prefault({}),
    engine: z
      .object({
        threads: wholeAtLeast(1).optional().describe("threads of each model's pool (default: see edgellm doctor's cores line; on a 4-core Pi, 3)"),
        context_size: wholeAtLeast(1).optional().describe("positions per sequence, prompt + answer (default: the model's context, at most 4096)"),
      })
      .strict()
      .prefault({}),
    upstream: z
      .object({
        url: z.string({ error: 'must be text' }).default('').describe('OpenAI-compatible base URL (…/v1) for requests the policy sends to the cloud; empty = none. Its API key is api_key_file or the systemd credential upstream-key, never this file'),
        model: text.optional().describe('the model the upstream runs for requests routed to it (required with url)'),
        models: z.array(text, { error: 'must be a list of model names' }).default([]).describe('further upstream models a request may name (they are never run here)'),
        api_key_file: text.optional().describe('file holding the upstream API key (default: the systemd credential $CREDENTIALS_DIRECTORY/upstream-key; no key = no Authorization header)'),
        timeouts: z
          .object({
            connect_ms: wholeAtLeast(1).default(3000).describe('TCP/TLS connection to the upstream'),
            first_byte_ms: wholeAtLeast(1).default(20000).describe("until the upstream's first bytes (its queueing + prefill)"),
            idle_ms: wholeAtLeast(1).default(10000).describe('longest silence between streamed chunks'),
            total_ms: wholeAtLeast(1).default(120000).describe('the whole upstream reply'),
          })
          .strict()
          .prefault({}),
        breaker: z
          .object({
            failure_threshold: wholeAtLeast(1).default(3).describe('consecutive upstream failures (errors or timeouts) that open the circuit'),
            window_ms: wholeAtLeast(0).default(60000).describe('failures older than this no longer count'),
            cooldown_ms: wholeAtLeast(0).default(30000).describe('how long an open circuit sends everything local before one trial request'),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    policy: z
      .object({
        slo_ms: wholeAtLeast(0).default(0).describe('latency objective: a request whose estimated local latency (queue wait + prefill + decode at the measured rates) is above it goes to the cloud when allowed; 0 = none'),
        max_local_prompt_tokens: wholeAtLeast(0).default(0).describe('longer prompts go to the cloud when allowed; 0 = no limit'),
        classes: z
          .record(text, text, { error: 'must map class names to a local model name or "upstream"' })
          .default({})
          .describe('model classes a request may name (real-time, batch, ...) -> a local model name or "upstream"'),
        fallback_local: z.boolean({ error: 'must be true or false' }).default(true).describe('answer locally when the upstream fails (auto-routed requests the local model can serve)'),
        rates: z
          .record(
            text,
            z
              .object({
                prefill_tokens_per_s: z.number({ error: 'must be a number > 0' }).positive('must be a number > 0'),
                decode_tokens_per_s: z.number({ error: 'must be a number > 0' }).positive('must be a number > 0'),
              })
              .strict(),
            { error: 'must map local model names to {prefill_tokens_per_s, decode_tokens_per_s}' },
          )
          .default({})
          .describe('starting speeds per local model (edgellm bench -m: pp and tg t/s); replaced gradually by what generations measure'),
      })
      .strict()
      .prefault({}),
    access: z
      .object({
        roles: z
          .record(
            text,
            z
              .object({
                models: z.array(text, { error: 'must be a list of model names or classes' }).default(['*']).describe('model names or classes the role may ask for; "*" = any'),
                routes: z.array(z.enum(['local', 'cloud'], { error: 'must be local or cloud' }), { error: 'must be a list of routes (local, cloud)' }).default(['local']),
                max_tokens: wholeAtLeast(1).optional().describe("most tokens one request may generate (and the default); at most limits.max_tokens"),
                requests_per_minute: wholeAtLeast(1).optional().describe('requests per minute per device; absent = unlimited'),
                local_only: z.boolean({ error: 'must be true or false' }).default(false).describe("this role's requests never leave the node"),
              })
              .strict(),
            { error: 'must map role names to {models, routes, max_tokens, requests_per_minute, local_only}' },
          )
          .default({ local: { models: ['*'], routes: ['local'], local_only: false } })
          .describe('what each role may do; the default: role "local", any local model, no cloud'),
        devices: z
          .record(text, z.union([text, z.array(text)], { error: 'must be a role name or a list of role names' }), { error: 'must map device ids or globs to roles' })
          .default({})
          .describe('device id, or glob ("line-*", "press-?"), -> role name(s); an exact id wins over globs'),
        default_role: text.default('local').describe('the role of a device no entry of access.devices matches'),
      })
      .strict()
      .prefault({}),
    openai: z
      .object({
        port: z
          .number({ error: 'must be a port number from 1 to 65535' })
          .int('must be a port number from 1 to 65535')
          .min(1, 'must be a port number from 1 to 65535')
          .max(65535, 'must be a port number from 1 to 65535')
          .optional()
          .describe('serve the OpenAI-compatible HTTP API (POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models) on this port; absent = off'),
        host: text.default('127.0.0.1').describe('address the OpenAI-compatible API listens on; 0.0.0.0 or a LAN address to serve other machines (then set api_key_file)'),
        api_key_file: text.optional().describe('file holding the key clients must send as "Authorization: Bearer <key>" (first line); absent = no key asked'),
        max_body_bytes: wholeAtLeast(1024).default(1048576).describe('largest request body the OpenAI-compatible API reads, in bytes'),
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
        max_payload_bytes: wholeAtLeast(1)
          .default(262144)
          .describe('largest request message in bytes, refused with E_TOO_LARGE before it is parsed; keep it well above max_prompt_bytes (JSON escapes grow text)'),
        max_tokens: wholeAtLeast(1).default(1024).describe('most tokens one request may ask for (E_TOO_LARGE above it); also the default'),
        max_prompt_tokens: wholeAtLeast(1).default(8192).describe('largest prompt in tokens, as the local tokenizer counts them (E_TOO_LARGE above it)'),
        queue_depth: wholeAtLeast(1).default(64).describe('requests waiting for a slot; beyond it requests get E_QUEUE_FULL'),
        drain_s: wholeAtLeast(0).default(30).describe('on SIGTERM, how long running generations may finish before they are left for the next start'),
      })
      .strict()
      .prefault({}),
    multimodal: z
      .object({
        max_part_bytes: wholeAtLeast(1)
          .default(131072)
          .describe('largest image or audio part of a request, in decoded bytes (E_TOO_LARGE above it); its base64 must also fit limits.max_payload_bytes (MQTT) or openai.max_body_bytes'),
        https_image_urls: z
          .boolean({ error: 'must be true or false' })
          .default(false)
          .describe('forward https:// image URLs to the upstream, which fetches them (their size is not checked here); off = images as base64 data URLs only'),
      })
      .strict()
      .prefault({}),
    metrics: z
      .object({
        interval_s: wholeAtLeast(1).default(30).describe('how often <prefix>/metrics/<node_id> is published'),
        drift_sample: z
          .number({ error: 'must be a number from 0 to 1' })
          .min(0, 'must be a number from 0 to 1')
          .max(1, 'must be a number from 0 to 1')
          .default(0.05)
          .describe('fraction of local requests scored under the model for the drift gauges (edgellm_prompt_logprob_mean); a scored prompt takes ~2.2x as long to evaluate (the output layer at every prompt token); 0 = off'),
      })
      .strict()
      .prefault({}),
    http: z
      .object({
        port: portNumber.default(0).describe('port of the HTTP endpoint for GET /healthz and GET /metrics (Prometheus); 0 = no endpoint'),
        host: text.default('127.0.0.1').describe('address the endpoint listens on; it has no authentication, so keep it on loopback unless a firewall guards the port'),
      })
      .strict()
      .prefault({}),
    audit: z
      .object({
        retention_days: wholeAtLeast(1).default(90).describe('days the audit log (requests, grants, revokes, config loads) keeps a record; older ones are pruned at start and hourly'),
        store_prompts: z.boolean({ error: 'must be true or false' }).default(false).describe('keep each request\'s prompt text in the audit log (off: only its token count)'),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z.enum(['error', 'warn', 'info', 'debug'], { error: 'must be one of error, warn, info, debug' }).default('info'),
        format: z
          .enum(['auto', 'json', 'pretty'], { error: 'must be one of auto, json, pretty' })
          .default('auto')
          .describe('json: one JSON object per line; pretty: one readable line per event; auto: pretty on a terminal, json on a pipe, a file or journald'),
      })
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
  httpPort?: string;
  /** A number once commander's parser has read it; text that is not a number is left for the schema to refuse. */
  openaiPort?: number | string;
  prefix?: string;
  embeddedBrokerPort?: string;
  logLevel?: string;
  logFormat?: string;
}

const flagKeys: Record<keyof ConfigFlags, [string, string]> = {
  broker: ['broker.url', '--broker'],
  model: ['model', '--model'],
  fleetGroup: ['fleet.group', '--fleet-group'],
  stateDir: ['state_dir', '--state-dir'],
  nodeId: ['node_id', '--node-id'],
  httpPort: ['http.port', '--http-port'],
  openaiPort: ['openai.port', '--openai-port'],
  prefix: ['prefix', '--prefix'],
  embeddedBrokerPort: ['broker.embedded.port', '--embedded-broker-port'],
  logLevel: ['log.level', '--log-level'],
  logFormat: ['log.format', '--log-format'],
};

/** A record (access.roles, policy.classes, ...) is set from a variable as JSON. */
type Leaf = { path: string[]; kind: 'string' | 'number' | 'boolean' | 'list' | 'enum' | 'record' };

interface Def {
  type: string;
  innerType?: z.ZodType;
  shape?: Record<string, z.ZodType>;
  valueType?: z.ZodType;
}
const defOf = (s: z.ZodType): Def => (s as unknown as { _zod: { def: Def } })._zod.def;

/** Every settable key of the schema, found by walking it (so the variables can never drift from it). */
function leaves(schema: z.ZodType, path: string[] = []): Leaf[] {
  const def = defOf(schema);
  if (def.type === 'optional' || def.type === 'default' || def.type === 'prefault') return leaves(def.innerType!, path);
  if (def.type === 'object') {
    return Object.entries(def.shape!).flatMap(([k, v]) => leaves(v, [...path, k]));
  }
  const kind = def.type === 'array' ? 'list' : def.type === 'enum' ? 'enum' : def.type === 'record' ? 'record' : (def.type as Leaf['kind']);
  return [{ path, kind }];
}

export const envName = (path: string[]) => 'EDGELLM_' + path.join('_').toUpperCase();

/** The keys a mapping at `path` of the schema may hold (a record's entries take its value's keys), or none. */
function keysAt(schema: z.ZodType, path: ReadonlyArray<PropertyKey>): string[] {
  let def = defOf(schema);
  for (let i = 0; ; ) {
    if (def.type === 'optional' || def.type === 'default' || def.type === 'prefault') def = defOf(def.innerType!);
    else if (i === path.length) return def.type === 'object' ? Object.keys(def.shape!) : [];
    else if (def.type === 'object' && def.shape![String(path[i])]) def = defOf(def.shape![String(path[i++])]!);
    else if (def.type === 'record') (def = defOf(def.valueType!)), i++;
    else return [];
  }
}

/**
 * EDGELLM_* variables edgellm reads that are not config keys: engine switches read at run time
 * (docs/architecture.md) and build switches (npm install, scripts/). Neither gets an "unknown" warning.
 */
const OTHER_VARIABLES = [
  'EDGELLM_ADDON', 'EDGELLM_KERNELS', 'EDGELLM_REPACK', 'EDGELLM_SPIN_US', 'EDGELLM_EXPERT_PAGING',
  'EDGELLM_COMMAND', // set by the installed launcher (bin/edgellm): the command the daemon's "try it" line shows
  'EDGELLM_WERROR', 'EDGELLM_TESTS', 'EDGELLM_STATIC', 'EDGELLM_CLANG', 'EDGELLM_NODE_VERSION', 'EDGELLM_CACHE_DIR',
  'EDGELLM_LLAMA_LIB_DIR',
];

/**
 * One warning per EDGELLM_* variable edgellm does not know (a misspelt one would otherwise be
 * ignored without a word), with the nearest real names from the schema's key list.
 */
export function unknownEnvironmentWarnings(env: NodeJS.ProcessEnv): string[] {
  const known = new Set([...leaves(configSchema).map((l) => envName(l.path)), ...OTHER_VARIABLES]);
  return Object.keys(env)
    .filter((name) => name.startsWith('EDGELLM_') && !known.has(name))
    .sort()
    .map((name) => {
      const hint = didYouMean(name, known);
      return `${name} is not a variable edgellm reads, so it is ignored${hint ? `: ${hint}` : ''}`;
    });
}

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
  if (kind === 'record') {
    try {
      return JSON.parse(raw) as unknown;
    } catch {
      return raw; // the schema says what the key takes
    }
  }
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
  const kinds = new Map(leaves(configSchema).map((l) => [l.path.join('.'), l.kind]));
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
    // Flags arrive as text, like variables: "--http-port 9100" is the number 9100.
    setPath(raw, key.split('.'), typeof value === 'string' ? fromEnvText(kinds.get(key) ?? 'string', value) : value);
    sources.set(key, flagName);
  }
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const where = (p: string) => {
      const src = sources.get(p) ?? (opts.file && p !== '' ? opts.file : undefined);
      return src ? ` (from ${src})` : '';
    };
    const suggest = (path: ReadonlyArray<PropertyKey>, key: string) => {
      const parent = path.map(String).join('.');
      const hint = didYouMean(key, keysAt(configSchema, path), (k) => `"${parent ? `${parent}.` : ''}${k}"`);
      return hint ? ` (${hint})` : '';
    };
    throw new EdgeError('E_CONFIG', describeIssues(result.error.issues, raw, 'key', where, suggest).join('; '));
  }
  checkBrokerCredentials(result.data);
  checkPolicyReferences(result.data);
  return result.data;
}

/**
 * A password without a user name (neither broker.username nor one in broker.url): MQTT 3.1.1 forbids
 * it and brokers refuse the connection, which the daemon would retry forever. Refused at load
 * instead, naming the key to set.
 */
export function checkBrokerCredentials(config: DaemonConfig): void {
  const { url, username, password_file } = config.broker;
  if (password_file !== undefined && username === undefined && urlUsername(url) === '') {
    throw new EdgeError(
      'E_CONFIG',
      'broker.password_file is set but broker.username is not: an MQTT broker takes a password only with a user name; set broker.username (EDGELLM_BROKER_USERNAME)',
    );
  }
}

/** The value the config's policy.classes use for the upstream. */
export const UPSTREAM_CLASS_TARGET = 'upstream';

/**
 * Names that must refer to something configured elsewhere: roles of devices and the default role,
 * models and classes of roles, targets of classes, models of seeded rates, the upstream's model.
 * Each error names the key. Model names are only checked when models are configured.
 */
export function checkPolicyReferences(config: DaemonConfig): void {
  const fail = (msg: string): never => {
    throw new EdgeError('E_CONFIG', msg);
  };
  const { upstream, policy, access } = config;
  const hasUpstream = upstream.url.trim() !== '';
  if (hasUpstream && upstream.model === undefined) {
    fail('upstream.model is missing: name the model the upstream should run (upstream.url is set)');
  }
  const locals = [...modelFiles(config).keys()];
  const upstreamModels = hasUpstream ? [upstream.model!, ...upstream.models] : [];
  const classes = Object.keys(policy.classes);
  const list = (xs: string[]) => (xs.length > 0 ? xs.join(', ') : 'none');
  for (const [cls, target] of Object.entries(policy.classes)) {
    if (locals.includes(cls) || upstreamModels.includes(cls)) fail(`policy.classes.${cls}: "${cls}" is already a model name; give the class another name`);
    if (target === UPSTREAM_CLASS_TARGET) {
      if (!hasUpstream) fail(`policy.classes.${cls} maps to "upstream", but upstream.url is empty: configure the upstream or map the class to a local model`);
    } else if (locals.length > 0 && !locals.includes(target)) {
      fail(`policy.classes.${cls}: "${target}" is not a local model (${list(locals)}) nor "upstream"`);
    }
  }
  if (locals.length > 0) {
    for (const model of Object.keys(policy.rates)) {
      if (!locals.includes(model)) fail(`policy.rates.${model}: "${model}" is not a local model (${list(locals)})`);
    }
  }
  const variantNames = Object.keys(config.variants);
  for (const [name, variants] of Object.entries(config.variants)) {
    if (locals.includes(name) || upstreamModels.includes(name) || classes.includes(name)) {
      fail(`variants.${name}: "${name}" is already a model or class name; give the A/B name another name`);
    }
    const seen = new Set<string>();
    variants.forEach(({ model }, i) => {
      if (seen.has(model)) fail(`variants.${name}[${i}].model: "${model}" is listed twice; give it one entry with the summed weight`);
      seen.add(model);
      if (locals.length > 0 && !locals.includes(model) && !upstreamModels.includes(model)) {
        fail(`variants.${name}[${i}].model: "${model}" is not a model of this node (${list([...locals, ...upstreamModels])})`);
      }
    });
  }
  for (const [model, adapters] of Object.entries(config.adapters)) {
    if (!locals.includes(model)) fail(`adapters.${model}: "${model}" is not a local model (${list(locals)}); adapters run on a local model`);
    const seen = new Set<string>();
    adapters.forEach(({ name }, i) => {
      if (seen.has(name)) fail(`adapters.${model}[${i}].name: "${name}" is listed twice; give each adapter its own name`);
      seen.add(name);
    });
  }
  const roles = Object.keys(access.roles);
  if (!roles.includes(access.default_role)) {
    fail(`access.default_role "${access.default_role}" is not a role: define it under access.roles (defined: ${list(roles)})`);
  }
  for (const [device, names] of Object.entries(access.devices)) {
    for (const role of typeof names === 'string' ? [names] : names) {
      if (!roles.includes(role)) fail(`access.devices."${device}": "${role}" is not a role: define it under access.roles (defined: ${list(roles)})`);
    }
  }
  if (locals.length > 0) {
    const known = [...locals, ...upstreamModels, ...classes, ...variantNames];
    for (const [name, role] of Object.entries(access.roles)) {
      for (const model of role.models) {
        if (model !== '*' && !known.includes(model)) {
          fail(`access.roles.${name}.models: "${model}" is not a model or class of this node (${list(known)}); use "*" for any`);
        }
      }
    }
  }
}

/** The config as `--print-config` shows it: secrets (a password inside the broker URL) masked. */
export function maskSecrets(config: DaemonConfig): DaemonConfig {
  const copy = structuredClone(config);
  // No broker.url: the embedded broker, which has no credentials.
  if (copy.broker.url !== undefined) {
    try {
      const url = new URL(copy.broker.url);
      if (url.password) {
        url.password = '****';
        copy.broker.url = url.toString();
      }
    } catch {
      // not a URL we can parse: the broker will say so when we connect
    }
  }
  // The upstream's URL may carry credentials too (user:key@, ?api_key=); the key itself is never in the config.
  copy.upstream.url = redactUrl(copy.upstream.url);
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
 * The upstream API key, as a Secret (prints as [redacted]): upstream.api_key_file when set, else the
 * systemd credential upstream-key ($CREDENTIALS_DIRECTORY/upstream-key; the unit's fallback is a blank
 * one). undefined when no upstream is configured or there is no key (then no Authorization header is
 * sent, as local servers such as llama.cpp's or another edgellm node expect). Never logged.
 */
export function readUpstreamSecret(config: DaemonConfig, env: NodeJS.ProcessEnv = process.env): Secret | undefined {
  if (config.upstream.url.trim() === '') return undefined;
  return readApiKey({ file: config.upstream.api_key_file, env });
}
