/**
 * Admission: one validated request through access control and the route policy, deciding where it
 * runs (local or the upstream, behind the circuit breaker) without running it: the daemon's stages run
 * the decision (src/daemon/request/). A refusal is audited here and thrown as EdgeError; an admitted
 * request carries its audit record, which the daemon writes through audit() once the request ends, so
 * every request leaves one record.
 */
import { EdgeError } from '../errors.js';
import { mediaOf, textOf, type MediaSummary } from '../protocol/media-parts.js';
import type { AccessControl } from './access.js';
import type { AuditSink, RequestAudit } from './audit.js';
import type { CircuitBreaker, BreakerTicket } from './breaker.js';
import type { LocalRates, RequestedRoute, Route, RouteDecision, RoutePolicy } from './router.js';
import { UpstreamError, type ChatMessage } from './upstream.js';
import type { ChosenVariant } from './variants.js';

/** A request the daemon has validated and counted. */
export interface AdmissionRequest {
  id: string;
  device: string;
  prompt?: string;
  messages?: ChatMessage[];
  /** A model name or class (for an A/B name: the chosen variant's model). */
  model?: string;
  /** A/B variants: the name asked for (access control checks it) and the variant chosen for it. */
  ab?: ChosenVariant;
  /** A LoRA adapter of the local model (checked by the daemon before admission). */
  adapter?: string;
  max_tokens?: number;
  route?: RequestedRoute;
  local_only?: boolean;
  /** Bytes of the payload as received. */
  payload_bytes: number;
  /** Prompt tokens as the local tokenizer counts them. */
  prompt_tokens: number;
  /** The scheduler's estimate of the wait for a local slot (ms). */
  queue_wait_ms?: number;
  /** false: not counted against the device's rate limit (a request taken back after a restart). */
  rate_limited?: boolean;
  /** Its W3C trace id, kept in its audit record. */
  trace_id?: string;
}

/** A request let through access control and routed. */
export interface Admitted {
  decision: Extract<RouteDecision, { ok: true }>;
  /** The max_tokens to run with: the request's, or its roles' / limits' default. */
  max_tokens: number;
  /** The request gave no max_tokens: a local run may shrink it to the context's room. */
  max_tokens_is_default: boolean;
  /** The breaker ticket of a cloud route: report success, failure or cancel on it exactly once. */
  ticket: BreakerTicket | undefined;
  /** The request's audit record, filled so far; write it through audit() once the request ends. */
  record: RequestAudit;
}

export interface AdmissionOptions {
  access: AccessControl;
  policy: RoutePolicy;
  breaker: CircuitBreaker;
  rates: LocalRates;
  audit: AuditSink;
  /** Keep prompt text in audit records (off by default). */
  audit_prompts?: boolean | undefined;
  now?: () => number;
}

export class Admission {
  private readonly o: AdmissionOptions;
  private readonly now: () => number;

  constructor(opts: AdmissionOptions) {
    this.o = opts;
    this.now = opts.now ?? Date.now;
  }

  /** Access control, then the route policy; a refusal is audited and thrown as EdgeError. */
  admit(req: AdmissionRequest): Admitted {
    const record: RequestAudit = {
      type: 'request',
      time: this.now(),
      device: req.device,
      id: req.id,
      ...(req.trace_id !== undefined ? { trace_id: req.trace_id } : {}),
      ...(req.model !== undefined ? { model: req.model } : {}),
      ...(req.ab !== undefined ? { variant: req.ab.variant, variant_of: req.ab.name } : {}),
      ...(req.adapter !== undefined ? { adapter: req.adapter } : {}),
      allowed: false,
      outcome: 'denied',
      prompt_tokens: req.prompt_tokens,
      ...(this.o.audit_prompts ? { prompt: promptText(req) } : {}),
    };
    // Image and audio parts: their kinds and sizes are audited, never their data.
    const media = mediaOf(req.messages);
    if (media.length > 0) record.media = media;
    const access = this.o.access.check({
      device: req.device,
      payload_bytes: req.payload_bytes,
      prompt_tokens: req.prompt_tokens,
      max_tokens: req.max_tokens,
      // A role allows an A/B name as a whole, as it allows a class.
      model: req.ab?.name ?? req.model,
      ...(req.rate_limited === false ? { rate_limited: false } : {}),
    });
    if (access.permissions) record.roles = access.permissions.roles;
    if (!access.allowed) throw this.deny(record, access.error);

    const decide = (breakerOpen: boolean) => this.decide(req, media, access.routes, access.local_only, access.max_tokens, breakerOpen);
    let decision: RouteDecision = decide(!this.o.breaker.admits());
    let ticket: BreakerTicket | undefined;
    if (decision.ok && decision.route === 'cloud') {
      ticket = this.o.breaker.acquire();
      // admits() and acquire() run in the same tick, so this only guards against a shared breaker.
      if (!ticket) decision = decide(true);
    }
    if (!decision.ok) throw this.deny(record, decision.error);

    record.allowed = true;
    record.route = decision.route;
    record.route_reason = decision.reason;
    record.model = decision.model;
    return { decision, max_tokens: access.max_tokens, max_tokens_is_default: req.max_tokens === undefined, ticket, record };
  }

  /** Writes a request's audit record (the audit sink of this runner). */
  audit(record: RequestAudit): void {
    this.o.audit.write(record);
  }

  private decide(req: AdmissionRequest, media: MediaSummary[], routes: Route[], roleLocalOnly: boolean, maxTokens: number, breakerOpen: boolean): RouteDecision {
    return this.o.policy.decide({
      route: req.route,
      local_only: req.local_only,
      ...(media.length > 0 ? { media } : {}),
      model: req.model,
      prompt_tokens: req.prompt_tokens,
      max_tokens: maxTokens,
      max_tokens_is_default: req.max_tokens === undefined,
      allowed_routes: routes,
      role_local_only: roleLocalOnly,
      breaker_open: breakerOpen,
      queue_wait_ms: req.queue_wait_ms,
      rates: this.o.rates.snapshot(),
    });
  }

  private deny(record: RequestAudit, error: EdgeError): EdgeError {
    record.denied = { code: error.code, message: error.message };
    this.o.audit.write(record);
    return error;
  }
}

/** Short words for a route_reason: "HTTP 500", "timeout", "stream cut". */
export function failureOf(err: unknown): string {
  if (err instanceof UpstreamError) {
    if (err.failure === 'http') return `HTTP ${err.status}`;
    if (err.failure === 'network' && /cut|mid-reply/.test(err.message)) return 'stream cut';
    return err.failure;
  }
  return err instanceof EdgeError ? err.code : 'error';
}

export function promptText(req: Pick<AdmissionRequest, 'prompt' | 'messages'>): string {
  return req.prompt ?? (req.messages ?? []).map((m) => `${m.role}: ${textOf(m.content)}`).join('\n');
}
