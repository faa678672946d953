/**
 * The daemon's hybrid-cloud policy, built from the config: access control (roles, devices, grants,
 * limits, rate limit), the route policy (classes, max_local_prompt_tokens, slo_ms), the local speeds
 * it learns, and the upstream client behind its circuit breaker. The admit stage asks it to admit each
 * request (Admission.admit: access -> route, audited when refused); the run stages run the decision,
 * so local work goes through the RequestQueue and cloud work through the upstream client here.
 *
 * The upstream API key lives only inside the UpstreamClient (a Secret); status() and the log show
 * whether one is set, never what it is.
 */
import { AccessControl, type GrantStore } from '../policy/access.js';
import { configLoadRecord, type AuditSink } from '../policy/audit.js';
import { CircuitBreaker, type BreakerState, type BreakerStatus } from '../policy/breaker.js';
import { Admission } from '../policy/admission.js';
import { CLOUD_TARGET, LocalRates, RoutePolicy } from '../policy/router.js';
import { redactUrl, type Secret } from '../secret.js';
import { UpstreamClient } from '../policy/upstream.js';
import { UPSTREAM_CLASS_TARGET, type DaemonConfig } from '../config.js';
import type { LocalModel } from './engine-port.js';

/** What the status topic and stats() say about the upstream; null when none is configured. */
export interface UpstreamStatus {
  url: string;
  model: string;
  api_key: 'set' | 'none';
  breaker: BreakerStatus;
}

export interface DaemonPolicyDeps {
  config: DaemonConfig;
  /** The loaded local models by name; the first is the default. */
  models: ReadonlyMap<string, LocalModel>;
  grants: GrantStore;
  audit: AuditSink;
  apiKey: Secret | undefined;
  now?: () => number;
}

export class DaemonPolicy {
  readonly access: AccessControl;
  readonly router: RoutePolicy;
  readonly breaker: CircuitBreaker;
  readonly rates: LocalRates;
  readonly upstream: UpstreamClient | undefined;
  readonly admission: Admission;
  readonly audit: AuditSink;
  private readonly apiKey: Secret | undefined;

  constructor(deps: DaemonPolicyDeps) {
    const { config, models } = deps;
    const now = deps.now ?? Date.now;
    this.audit = deps.audit;
    this.apiKey = deps.apiKey;
    const u = config.upstream;
    this.upstream =
      u.url.trim() === ''
        ? undefined
        : new UpstreamClient({ url: u.url, model: u.model!, apiKey: deps.apiKey, timeouts: u.timeouts });
    this.breaker = new CircuitBreaker(u.breaker, now);
    this.rates = new LocalRates(config.policy.rates);
    this.access = new AccessControl({
      config: {
        roles: Object.fromEntries(Object.entries(config.access.roles).map(([name, r]) => [name, { ...r }])),
        devices: config.access.devices,
        default_role: config.access.default_role,
      },
      limits: {
        // limits.max_payload_bytes is enforced by the transport before a payload is parsed
        // (decodeRequest, E_TOO_LARGE, audited by the responder); this layer sees only parsed requests.
        max_payload_bytes: Number.MAX_SAFE_INTEGER,
        max_prompt_tokens: config.limits.max_prompt_tokens,
        max_max_tokens: config.limits.max_tokens,
      },
      grants: deps.grants,
      audit: deps.audit,
      now,
    });
    this.router = new RoutePolicy({
      local_models: [...models.values()].map((m) => ({ name: m.name, context_size: m.contextSize })),
      upstream: this.upstream ? { model: u.model!, models: u.models } : undefined,
      classes: Object.fromEntries(
        Object.entries(config.policy.classes).map(([cls, target]) => [cls, target === UPSTREAM_CLASS_TARGET ? CLOUD_TARGET : target]),
      ),
      max_local_prompt_tokens: config.policy.max_local_prompt_tokens,
      slo_ms: config.policy.slo_ms,
      fallback_local: config.policy.fallback_local,
    });
    this.admission = new Admission({
      access: this.access,
      policy: this.router,
      breaker: this.breaker,
      rates: this.rates,
      audit: deps.audit,
      // The prompt goes into the record; the SQLite sink keeps it only with audit.store_prompts.
      audit_prompts: true,
      now,
    });
  }

  /** Audits one config load: the effective config, redacted (the key masked wherever it could appear). */
  auditConfigLoad(config: DaemonConfig, source: string, time = Date.now()): void {
    this.audit.write(configLoadRecord(config, source, time, [this.apiKey]));
  }

  /** The upstream and its breaker for the status topic and stats(); never the key. */
  upstreamStatus(): UpstreamStatus | null {
    if (!this.upstream) return null;
    const d = this.upstream.describe();
    return { url: redactUrl(d.url), model: d.model, api_key: d.api_key, breaker: this.breaker.status() };
  }

  /** The breaker's state, or 'none' without an upstream (what the status topic republishes on). */
  breakerState(): BreakerState | 'none' {
    return this.upstream ? this.breaker.state() : 'none';
  }
}
