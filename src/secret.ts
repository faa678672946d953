/**
 * The upstream API key: read once, held in a Secret that prints as "[redacted]" wherever it ends up
 * (String(), JSON, util.inspect, template strings), and redact() for anything that could print
 * configuration or messages. The key itself leaves only through reveal(), in the Authorization header.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { EdgeError } from './errors.js';

export const REDACTED = '[redacted]';

export class Secret {
  readonly #value: string;

  constructor(value: string) {
    this.#value = value;
  }

  /** The secret itself: only for the request header. */
  reveal(): string {
    return this.#value;
  }

  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return REDACTED;
  }
}

/** The systemd credential the unit loads the key into (LoadCredential=upstream-key:...). */
export const DEFAULT_KEY_CREDENTIAL = 'upstream-key';

export interface ApiKeySource {
  /** A file holding the key (upstream.api_key_file); wins over the credential. */
  file?: string | undefined;
  /** The systemd credential's name under $CREDENTIALS_DIRECTORY (default upstream-key). */
  credential?: string | undefined;
  /** Where CREDENTIALS_DIRECTORY is looked up (default process.env). */
  env?: NodeJS.ProcessEnv | undefined;
}

/**
 * Reads the upstream API key from `file`, else from $CREDENTIALS_DIRECTORY/<credential>.
 * Surrounding whitespace is dropped; a blank key, or no source, means "no key" (undefined).
 * A configured file that cannot be read is E_CONFIG naming the path (never its content);
 * a missing credential is simply no key, since the unit sets an empty fallback.
 */
export function readApiKey(source: ApiKeySource = {}): Secret | undefined {
  if (source.file !== undefined && source.file !== '') return readKeyFile(source.file, 'upstream.api_key_file');
  const name = source.credential ?? DEFAULT_KEY_CREDENTIAL;
  if (name === '' || name.includes('/') || name === '.' || name === '..') {
    throw new EdgeError('E_CONFIG', `the credential name "${name}" is not a plain file name: use a name such as ${DEFAULT_KEY_CREDENTIAL}`);
  }
  const dir = (source.env ?? process.env).CREDENTIALS_DIRECTORY;
  if (dir === undefined || dir === '') return undefined;
  try {
    return secretOf(readFileSync(join(dir, name), 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * The key in `file` (surrounding whitespace dropped; blank = undefined). A file that cannot be read is
 * E_CONFIG naming `setting` and the path, never the content.
 */
export function readKeyFile(file: string, setting: string): Secret | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new EdgeError('E_CONFIG', `${setting} ${file} cannot be read (${code}): create it readable by the edgellm user (mode 0600), or remove the setting`);
  }
  return secretOf(text);
}

function secretOf(text: string): Secret | undefined {
  const key = text.trim();
  return key === '' ? undefined : new Secret(key);
}

/** Keys whose values are secrets, wherever they appear in a config tree. */
const SECRET_KEY = /(api_?key|token|secret|password|passwd|authorization|bearer|cookie)/i;
/** ...except names of where a secret lives, which are not secret themselves. */
const SECRET_LOCATION = /(_file|_path|_dir|_credential|_name)$/i;

export function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key) && !SECRET_LOCATION.test(key);
}

/**
 * A copy of `value` safe to print, log or audit: Secret instances and values under secret-looking
 * keys become "[redacted]", URL credentials and secret query parameters are masked, and every
 * occurrence of the given secrets inside any string is replaced.
 */
export function redact<T>(value: T, secrets: ReadonlyArray<Secret | string | undefined> = []): T {
  const known = secrets
    .map((s) => (s instanceof Secret ? s.reveal() : s))
    .filter((s): s is string => typeof s === 'string' && s.length > 0);
  return walk(value, known, new WeakSet()) as T;
}

/** redact() for one string. */
export function redactText(text: string, secrets: ReadonlyArray<Secret | string | undefined> = []): string {
  return redact(text, secrets);
}

function walk(v: unknown, known: string[], seen: WeakSet<object>): unknown {
  if (typeof v === 'string') return scrubString(v, known);
  if (v instanceof Secret) return REDACTED;
  if (v === null || typeof v !== 'object') return v;
  if (seen.has(v)) return '[circular]';
  seen.add(v);
  if (Array.isArray(v)) return v.map((x) => walk(x, known, seen));
  if (v instanceof Date) return v;
  if (v instanceof Map) return new Map([...v].map(([k, x]) => [k, secretEntry(String(k), x, known, seen)]));
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) out[k] = secretEntry(k, x, known, seen);
  return out;
}

function secretEntry(key: string, x: unknown, known: string[], seen: WeakSet<object>): unknown {
  if (isSecretKey(key) && x !== undefined && x !== null && x !== '') return REDACTED;
  return walk(x, known, seen);
}

function scrubString(s: string, known: string[]): string {
  let out = s;
  for (const secret of known) out = out.split(secret).join(REDACTED);
  if (out.includes('://')) out = out.replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>]+/gi, (url) => redactUrl(url));
  return out;
}

/** A URL without its user:password and with secret-looking query parameters masked. */
export function redactUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return url;
  }
  let changed = false;
  if (u.username !== '' || u.password !== '') {
    u.username = 'redacted';
    u.password = '';
    changed = true;
  }
  for (const key of [...u.searchParams.keys()]) {
    if (isSecretKey(key) || /^key$/i.test(key)) {
      u.searchParams.set(key, 'redacted');
      changed = true;
    }
  }
  return changed ? u.toString() : url;
}
