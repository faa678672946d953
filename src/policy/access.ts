/**
 * Who may ask for what. A device's roles come from access.devices (its id, or globs matching it),
 * else access.default_role, plus its unexpired temporary grants. Roles add up: the union of their
 * models and routes, the largest max_tokens and requests_per_minute; local_only holds only when
 * every role says so (a grant that adds the cloud route lifts it).
 *
 * check() refuses with a code and words that say what to do:
 *   E_TOO_LARGE     payload bytes, prompt tokens or max_tokens above the limits
 *   E_RATE_LIMITED  more requests per minute than the roles allow (token bucket per device)
 *   E_FORBIDDEN     a model the roles do not list
 * and otherwise returns what the router needs (routes, local_only, the max_tokens to run with).
 * Grants live behind GrantStore (the daemon keeps them in SQLite), so `edgellm grant` and
 * `edgellm revoke` take effect on the next request without a restart.
 */
import { EdgeError } from '../errors.js';
import type { AuditSink } from './audit.js';
import type { Route } from './router.js';

export interface Role {
  /** Model names or classes this role may ask for; "*" = any. A request without a model always gets the default. */
  models: readonly string[];
  routes: readonly Route[];
  /** Most tokens one request may generate (also the default when a request gives none). */
  max_tokens?: number | undefined;
  /** Requests per minute per device (burst of the same size); absent = unlimited. */
  requests_per_minute?: number | undefined;
  /** Requests of devices with this role never go to the cloud. */
  local_only?: boolean | undefined;
}

export interface AccessConfig {
  roles: Readonly<Record<string, Role>>;
  /** Device id or glob ("*" any characters, "?" one) -> role names. */
  devices: Readonly<Record<string, readonly string[] | string>>;
  /** The role of a device no entry of `devices` matches. */
  default_role: string;
}

export interface Limits {
  /** Largest request payload (bytes, as received). */
  max_payload_bytes: number;
  /** Largest prompt (tokens, as the local tokenizer counts them). */
  max_prompt_tokens: number;
  /** Largest max_tokens any request may ask for, whatever the role says. */
  max_max_tokens: number;
}

/** The shipped default: any device may use the local model, nobody the cloud. */
export const DEFAULT_ACCESS: AccessConfig = Object.freeze({
  roles: Object.freeze({
    local: Object.freeze({ models: Object.freeze(['*']), routes: Object.freeze(['local'] as Route[]) }),
  }),
  devices: Object.freeze({}),
  default_role: 'local',
});

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  max_payload_bytes: 65_536,
  max_prompt_tokens: 8_192,
  max_max_tokens: 1_024,
});

export interface Grant {
  device: string;
  role: string;
  /** ms since the epoch. */
  granted_at: number;
  expires_at: number;
  /** Who granted it (operator name, "cli"), for the audit log. */
  by?: string | undefined;
}

/**
 * Temporary grants. Synchronous, so a SQLite (better-sqlite3) implementation fits directly.
 * add() of an existing (device, role) replaces its expiry.
 */
export interface GrantStore {
  add(grant: Grant): void;
  /** Removes the device's grants of `role` (all roles when undefined); returns how many were active at `at`. */
  revoke(device: string, role: string | undefined, at: number): number;
  /** The device's grants still active at time `at` (expires_at > at). */
  active(device: string, at: number): Grant[];
  /** Every grant active at `at`. */
  list(at: number): Grant[];
}

export class MemoryGrantStore implements GrantStore {
  private readonly grants = new Map<string, Grant>();

  add(grant: Grant): void {
    this.grants.set(`${grant.device}\u0000${grant.role}`, { ...grant });
  }

  revoke(device: string, role: string | undefined, at: number): number {
    let n = 0;
    for (const [k, g] of this.grants) {
      if (g.device === device && (role === undefined || g.role === role)) {
        if (g.expires_at > at) n++;
        this.grants.delete(k);
      }
    }
    return n;
  }

  active(device: string, at: number): Grant[] {
    return this.list(at).filter((g) => g.device === device);
  }

  list(at: number): Grant[] {
    return [...this.grants.values()].filter((g) => g.expires_at > at).map((g) => ({ ...g }));
  }
}

/** What a device may do, its roles merged. */
export interface Permissions {
  roles: string[];
  /** Grants among them (role names), with their expiry. */
  grants: Array<{ role: string; expires_at: number }>;
  models: string[];
  routes: Route[];
  max_tokens: number | undefined;
  requests_per_minute: number | undefined;
  local_only: boolean;
}

export interface AccessRequest {
  device: string;
  /** Bytes of the request as received. */
  payload_bytes: number;
  prompt_tokens: number;
  max_tokens?: number | undefined;
  model?: string | undefined;
  /** false: not counted against the rate limit (a request taken back after a restart was counted when it arrived). */
  rate_limited?: boolean | undefined;
}

export type AccessDecision =
  | {
      allowed: true;
      permissions: Permissions;
      /** What the router takes: routes and local_only of the roles. */
      routes: Route[];
      local_only: boolean;
      /** The request's max_tokens, or the roles' / limits' default. */
      max_tokens: number;
    }
  | { allowed: false; error: EdgeError; permissions: Permissions | undefined };

export class AccessControl {
  readonly config: AccessConfig;
  readonly limits: Readonly<Limits>;
  private readonly grants: GrantStore;
  private readonly now: () => number;
  private readonly audit: AuditSink | undefined;
  private readonly exact = new Map<string, string[]>();
  private readonly globs: Array<{ re: RegExp; roles: string[] }> = [];
  private readonly buckets = new Map<string, { tokens: number; at: number; rpm: number }>();

  constructor(opts: {
    config?: AccessConfig;
    limits?: Partial<Limits>;
    grants: GrantStore;
    audit?: AuditSink;
    now?: () => number;
  }) {
    this.config = opts.config ?? DEFAULT_ACCESS;
    this.limits = Object.freeze({ ...DEFAULT_LIMITS, ...opts.limits });
    this.grants = opts.grants;
    this.audit = opts.audit;
    this.now = opts.now ?? Date.now;
    validateAccess(this.config, this.limits);
    for (const [pattern, roles] of Object.entries(this.config.devices)) {
      const list = typeof roles === 'string' ? [roles] : [...roles];
      if (/[*?]/.test(pattern)) this.globs.push({ re: globToRegExp(pattern), roles: list });
      else this.exact.set(pattern, list);
    }
  }

  /** The device's roles (configured + granted) merged, at this moment. */
  permissions(device: string): Permissions {
    const at = this.now();
    const configured = this.exact.get(device) ?? this.globs.filter((g) => g.re.test(device)).flatMap((g) => g.roles);
    const base = configured.length > 0 ? configured : [this.config.default_role];
    const grants = this.grants.active(device, at).filter((g) => this.config.roles[g.role] !== undefined);
    const names = [...new Set([...base, ...grants.map((g) => g.role)])];
    const roles = names.map((n) => this.config.roles[n]!);
    const maxOf = (xs: Array<number | undefined>) => (xs.some((x) => x === undefined) ? undefined : Math.max(...(xs as number[])));
    return {
      roles: names,
      grants: grants.map((g) => ({ role: g.role, expires_at: g.expires_at })),
      models: [...new Set(roles.flatMap((r) => r.models))],
      routes: (['local', 'cloud'] as const).filter((route) => roles.some((r) => r.routes.includes(route))),
      max_tokens: maxOf(roles.map((r) => r.max_tokens)),
      requests_per_minute: maxOf(roles.map((r) => r.requests_per_minute)),
      local_only: roles.every((r) => r.local_only === true),
    };
  }

  /** Limits, roles and the rate limit for one request; a refusal carries its code and advice. */
  check(req: AccessRequest): AccessDecision {
    const { limits } = this;
    if (req.payload_bytes > limits.max_payload_bytes) {
      return deny(`the request is ${req.payload_bytes} bytes; the limit is ${limits.max_payload_bytes} (limits.max_payload_bytes): send a shorter prompt`, 'E_TOO_LARGE');
    }
    const p = this.permissions(req.device);
    const denied = (message: string, code: 'E_FORBIDDEN' | 'E_TOO_LARGE' | 'E_RATE_LIMITED'): AccessDecision => deny(message, code, p);

    const wait = req.rate_limited === false ? 0 : this.take(req.device, p.requests_per_minute);
    if (wait > 0) {
      return denied(
        `device ${req.device} sent more than ${p.requests_per_minute} requests per minute (roles ${p.roles.join(', ')}): retry in ${Math.ceil(wait / 1000)} s`,
        'E_RATE_LIMITED',
      );
    }
    if (req.model !== undefined && !p.models.includes('*') && !p.models.includes(req.model)) {
      return denied(
        `model "${req.model}" is not allowed for device ${req.device} (roles ${p.roles.join(', ')} allow ${p.models.join(', ') || 'no model'}): leave model out for the default, or ask an operator for a grant`,
        'E_FORBIDDEN',
      );
    }
    if (req.prompt_tokens > limits.max_prompt_tokens) {
      return denied(`the prompt is ${req.prompt_tokens} tokens; the limit is ${limits.max_prompt_tokens} (limits.max_prompt_tokens): shorten it`, 'E_TOO_LARGE');
    }
    const cap = Math.min(p.max_tokens ?? Infinity, limits.max_max_tokens);
    if (req.max_tokens !== undefined && req.max_tokens > cap) {
      const by = cap === limits.max_max_tokens ? 'limits.max_tokens' : `roles ${p.roles.join(', ')}`;
      return denied(`max_tokens ${req.max_tokens} is more than the ${cap} allowed (${by}): ask for at most ${cap}`, 'E_TOO_LARGE');
    }
    return { allowed: true, permissions: p, routes: p.routes, local_only: p.local_only, max_tokens: req.max_tokens ?? cap };
  }

  /** Grants `role` to `device` for `ttl_ms` from now (replacing an earlier grant of it) and audits it. */
  grant(device: string, role: string, ttl_ms: number, by?: string): Grant {
    if (this.config.roles[role] === undefined) {
      throw new EdgeError('E_BAD_ARGUMENT', `there is no role "${role}": use one of ${Object.keys(this.config.roles).join(', ')}`);
    }
    if (device === '' || /[*?#+/]/.test(device)) {
      throw new EdgeError('E_BAD_ARGUMENT', `"${device}" is not a device id: grants name one device (no wildcards or slashes)`);
    }
    if (!(Number.isFinite(ttl_ms) && ttl_ms > 0)) throw new EdgeError('E_BAD_ARGUMENT', `a grant needs a positive duration, got ${ttl_ms} ms`);
    const at = this.now();
    const g: Grant = { device, role, granted_at: at, expires_at: at + ttl_ms, ...(by !== undefined ? { by } : {}) };
    this.grants.add(g);
    this.audit?.write({ type: 'grant', time: at, device, role, expires_at: g.expires_at, ...(by !== undefined ? { by } : {}) });
    return g;
  }

  /** Revokes at once (every role when `role` is undefined); returns how many active grants ended. */
  revoke(device: string, role?: string, by?: string): number {
    const at = this.now();
    const removed = this.grants.revoke(device, role, at);
    this.audit?.write({ type: 'revoke', time: at, device, role: role ?? '*', removed, ...(by !== undefined ? { by } : {}) });
    return removed;
  }

  /** Token bucket: rpm tokens of capacity refilled continuously; returns ms to wait, 0 when admitted. */
  private take(device: string, rpm: number | undefined): number {
    if (rpm === undefined) return 0;
    const at = this.now();
    let b = this.buckets.get(device);
    if (b === undefined || b.rpm !== rpm) {
      if (this.buckets.size >= MAX_BUCKETS) this.pruneBuckets(at);
      b = { tokens: rpm, at, rpm };
      this.buckets.set(device, b);
    }
    b.tokens = Math.min(rpm, b.tokens + ((at - b.at) * rpm) / 60_000);
    b.at = at;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return ((1 - b.tokens) * 60_000) / rpm;
  }

  /** Full buckets carry no state worth keeping. */
  private pruneBuckets(at: number): void {
    for (const [d, b] of this.buckets) if (b.tokens + ((at - b.at) * b.rpm) / 60_000 >= b.rpm) this.buckets.delete(d);
  }
}

/** Buckets kept before full ones are dropped (devices are few; this bounds a misconfigured broker). */
const MAX_BUCKETS = 10_000;

function deny(message: string, code: 'E_FORBIDDEN' | 'E_TOO_LARGE' | 'E_RATE_LIMITED', permissions?: Permissions): AccessDecision {
  return { allowed: false, error: new EdgeError(code, message), permissions };
}

/** "line-*" -> /^line-.*$/; every other character literal. */
export function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

/** Config errors name the key and what it takes (the daemon's schema checks types; this checks references). */
export function validateAccess(config: AccessConfig, limits: Limits): void {
  const roles = Object.keys(config.roles);
  if (config.roles[config.default_role] === undefined) {
    throw new EdgeError('E_CONFIG', `access.default_role "${config.default_role}" is not a role: define it under access.roles or use one of ${roles.join(', ')}`);
  }
  for (const [name, r] of Object.entries(config.roles)) {
    for (const route of r.routes) {
      if (route !== 'local' && route !== 'cloud') throw new EdgeError('E_CONFIG', `access.roles.${name}.routes: "${String(route)}" is not a route (local, cloud)`);
    }
    if (r.requests_per_minute !== undefined && !(r.requests_per_minute > 0)) {
      throw new EdgeError('E_CONFIG', `access.roles.${name}.requests_per_minute must be > 0 (leave it out for no limit)`);
    }
    if (r.max_tokens !== undefined && !(Number.isInteger(r.max_tokens) && r.max_tokens >= 1)) {
      throw new EdgeError('E_CONFIG', `access.roles.${name}.max_tokens must be a whole number >= 1`);
    }
  }
  for (const [device, list] of Object.entries(config.devices)) {
    for (const role of typeof list === 'string' ? [list] : list) {
      if (config.roles[role] === undefined) throw new EdgeError('E_CONFIG', `access.devices."${device}": "${role}" is not a role (${roles.join(', ')})`);
    }
  }
  for (const [k, v] of Object.entries(limits)) {
    if (!(Number.isInteger(v) && v >= 1)) throw new EdgeError('E_CONFIG', `limits.${k} must be a whole number >= 1, got ${v}`);
  }
}
