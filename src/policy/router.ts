/**
 * RoutePolicy: local or cloud, with a short reason, or a coded refusal. decide() is a pure function of
 * the config and its input (the access decision's routes, the breaker's answer, the queue's wait and
 * the rates learned so far), so every decision can be replayed from an audit record.
 *
 * In order:
 *  1. the model: a local model's name, a model only the upstream has, or a class mapped to either;
 *  2. a forced route (request route local|cloud) is honoured when the role allows it, else refused;
 *  3. auto: local when it can serve the request, unless a soft limit (max_local_prompt_tokens, the
 *     latency estimate above slo_ms) prefers the cloud and the cloud is usable (allowed by the role,
 *     not local_only, an upstream configured, the breaker closed); cloud when local cannot serve it
 *     (context, model) and the cloud is usable; otherwise E_NO_ROUTE at once (E_PROMPT_TOO_LONG when
 *     the local context is what stops it and the cloud is not usable for a lasting reason).
 * A request with image or audio parts (media) never runs locally, whatever it asks: the upstream when
 * the cloud is usable ("multimodal input ..."), with no local fallback; otherwise E_NO_ROUTE saying
 * what to change (E_BAD_REQUEST when the request's own local_only or route "local" contradicts it).
 */
import { EdgeError } from '../errors.js';
import { mediaKinds, type MediaSummary } from '../protocol/media-parts.js';

export type Route = 'local' | 'cloud';
export type RequestedRoute = 'auto' | Route;

export interface LocalModelSpec {
  name: string;
  /** Tokens one sequence may hold (prompt + completion). */
  context_size: number;
}

/** The upstream as the router sees it; absent = no upstream configured. */
export interface UpstreamSpec {
  /** The model asked for by default. */
  model: string;
  /** Further models the upstream serves that requests may name (the default is always included). */
  models?: readonly string[];
}

export interface RoutePolicyConfig {
  /** The local models; the first is the default unless default_model says otherwise. */
  local_models: readonly LocalModelSpec[];
  default_model?: string | undefined;
  upstream?: UpstreamSpec | undefined;
  /** Model classes (real-time, batch, ...) -> a local model's name, or "cloud" for the upstream. */
  classes?: Readonly<Record<string, string>> | undefined;
  /** Longer prompts go to the cloud when it is usable; 0 or absent = no limit. */
  max_local_prompt_tokens?: number | undefined;
  /** Latency objective: a local estimate above it goes to the cloud when usable; 0 or absent = none. */
  slo_ms?: number | undefined;
  /** Whether a cloud request whose upstream fails may be answered locally (default true). */
  fallback_local?: boolean | undefined;
}

/** Measured local speed (tokens per second). */
export interface LocalRate {
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
}

export interface RouteInput {
  /** The request's route (default auto). */
  route?: RequestedRoute | undefined;
  /** The request's local_only. */
  local_only?: boolean | undefined;
  /** The request's image and audio parts (media-parts.ts): only the upstream reads them. */
  media?: readonly MediaSummary[] | undefined;
  /** A model name or class; absent = the default model. */
  model?: string | undefined;
  prompt_tokens: number;
  /** The max_tokens the request will run with (after access filled in the default). */
  max_tokens: number;
  /**
   * max_tokens is a default, not the request's own: locally it shrinks to what the context has left
   * after the prompt (as the engine does), so only the prompt must fit.
   */
  max_tokens_is_default?: boolean | undefined;
  /** Routes the device's roles allow (AccessDecision.routes). */
  allowed_routes: readonly Route[];
  /** Any of the device's roles is local_only (AccessDecision.local_only). */
  role_local_only?: boolean | undefined;
  /** The breaker would refuse an upstream call now (!CircuitBreaker.admits()). */
  breaker_open?: boolean | undefined;
  /** The scheduler's estimate of the wait for a local slot (ms). */
  queue_wait_ms?: number | undefined;
  /** LocalRates.snapshot(): rates per local model; a model without one gets no latency estimate. */
  rates?: Readonly<Record<string, LocalRate>> | undefined;
}

export type RouteDecision =
  | {
      ok: true;
      route: Route;
      /** Short and specific: "prompt 5120 tokens > max_local_prompt_tokens 2048". */
      reason: string;
      /** The model to run: a local model's name, or the model to ask the upstream for. */
      model: string;
      /** For a cloud route: the local model that may answer instead if the upstream fails. */
      fallback_model?: string;
      /** The local latency estimate, when one was made (ms). */
      estimate_ms?: number;
    }
  | { ok: false; error: EdgeError };

/** The class target that means the upstream. */
export const CLOUD_TARGET = 'cloud';

export class RoutePolicy {
  readonly config: Readonly<RoutePolicyConfig>;
  private readonly locals = new Map<string, LocalModelSpec>();
  private readonly upstreamModels = new Set<string>();
  private readonly defaultModel: string | undefined;

  constructor(config: RoutePolicyConfig) {
    for (const m of config.local_models) {
      if (!(m.context_size >= 1)) throw new EdgeError('E_CONFIG', `local model ${m.name}: context_size must be >= 1, got ${m.context_size}`);
      this.locals.set(m.name, m);
    }
    if (config.upstream) for (const m of [config.upstream.model, ...(config.upstream.models ?? [])]) this.upstreamModels.add(m);
    this.defaultModel = config.default_model ?? config.local_models[0]?.name;
    if (this.defaultModel !== undefined && !this.locals.has(this.defaultModel)) {
      throw new EdgeError('E_CONFIG', `policy default_model "${this.defaultModel}" is not one of the local models (${[...this.locals.keys()].join(', ')})`);
    }
    for (const [cls, target] of Object.entries(config.classes ?? {})) {
      if (target !== CLOUD_TARGET && !this.locals.has(target)) {
        throw new EdgeError('E_CONFIG', `model class "${cls}" maps to "${target}", which is neither a local model (${[...this.locals.keys()].join(', ')}) nor "${CLOUD_TARGET}"`);
      }
    }
    this.config = config;
  }

  decide(input: RouteInput): RouteDecision {
    const requested = input.route ?? 'auto';
    if (input.local_only && requested === 'cloud') {
      return refuse('E_BAD_REQUEST', 'route "cloud" and local_only contradict each other: drop one of them');
    }

    // 1. What could serve this model locally and upstream.
    const target = this.resolve(input.model);
    if ('error' in target) return { ok: false, error: target.error };
    const cloudModel = target.cloud;
    const local = target.local !== undefined ? this.locals.get(target.local) : undefined;

    // Why each route cannot be used (undefined = it can).
    const allows = (r: Route) => input.allowed_routes.includes(r);
    // Tokens a local run would generate at most: a default max_tokens gives way to the context's room.
    const localMax = local !== undefined && input.max_tokens_is_default ? Math.max(1, Math.min(input.max_tokens, local.context_size - input.prompt_tokens)) : input.max_tokens;
    const tooLong = local !== undefined && input.prompt_tokens + localMax > local.context_size;
    const localBlock =
      !allows('local') ? 'local not allowed for this device'
      : local === undefined ? target.noLocal
      : input.prompt_tokens + localMax > local.context_size
        ? `prompt ${input.prompt_tokens} + max_tokens ${localMax} tokens > context ${local.context_size} of ${local.name}`
        : undefined;
    const cloudBlock =
      !allows('cloud') ? 'cloud not allowed for this device'
      : input.local_only ? 'local_only requested'
      : input.role_local_only ? "the device's role is local_only"
      : cloudModel === undefined ? 'no upstream configured'
      : input.breaker_open ? BREAKER_OPEN
      : undefined;

    const toCloud = (reason: string, fallback: boolean): RouteDecision => ({
      ok: true,
      route: 'cloud',
      reason,
      model: cloudModel!,
      ...(fallback && localBlock === undefined && this.config.fallback_local !== false ? { fallback_model: local!.name } : {}),
    });
    const toLocal = (reason: string, estimate?: number): RouteDecision => ({
      ok: true,
      route: 'local',
      reason,
      model: local!.name,
      ...(estimate !== undefined ? { estimate_ms: estimate } : {}),
    });

    if (input.media !== undefined && input.media.length > 0) return this.multimodal(input, requested, cloudModel, cloudBlock, target.local);

    // 2. Forced routes.
    if (requested === 'cloud') {
      // A node without an upstream cannot serve it for anyone: that is not a matter of permission.
      if (cloudModel === undefined && target.local !== undefined) {
        return refuse('E_NO_ROUTE', 'route "cloud" was asked for but this node has no upstream: send route "auto" or "local"');
      }
      if (!allows('cloud') || input.role_local_only) {
        return refuse(
          'E_FORBIDDEN',
          `route "cloud" is not allowed for this device (${cloudBlock}): send route "auto" or "local", or ask an operator for a role with the cloud route (edgellm grant DEVICE ROLE --for 2h)`,
        );
      }
      if (cloudBlock !== undefined) {
        const advice = cloudModel === undefined ? 'this node has no upstream: send route "auto" or "local"' : 'retry later, or send route "auto" to be answered locally';
        return refuse('E_NO_ROUTE', `route "cloud" was asked for but ${cloudBlock}: ${advice}`);
      }
      return toCloud('route cloud requested', false);
    }
    if (requested === 'local') {
      if (!allows('local')) return refuse('E_FORBIDDEN', 'route "local" is not allowed for this device: send route "auto", or ask an operator for a role with the local route');
      if (localBlock !== undefined && tooLong) return refuse('E_PROMPT_TOO_LONG', `${tooLongText(input.prompt_tokens, localMax, local!)}; route "local" was asked for: ${CONTEXT_ADVICE}`);
      if (localBlock !== undefined) return refuse('E_NO_ROUTE', `route "local" was asked for but ${localBlock}: ${localAdvice(local)}`);
      return toLocal('route local requested');
    }

    // 3. auto.
    if (localBlock !== undefined) {
      if (cloudBlock === undefined) return toCloud(localBlock, false);
      const bothForbidden = !allows('local') && !allows('cloud');
      // Too long here and no cloud to send it to that could change with time: the prompt is the problem.
      if (tooLong && cloudBlock !== BREAKER_OPEN) return refuse('E_PROMPT_TOO_LONG', `${tooLongText(input.prompt_tokens, localMax, local!)}; ${cloudBlock}: ${CONTEXT_ADVICE}`);
      return refuse(
        bothForbidden ? 'E_FORBIDDEN' : 'E_NO_ROUTE',
        bothForbidden
          ? 'this device may use neither the local nor the cloud route: ask an operator for a role (access.devices or edgellm grant)'
          : `${localBlock}, and ${cloudBlock}: ${localAdvice(local)}`,
      );
    }
    const l = local!;
    let soft: string | undefined;
    let estimate: number | undefined;
    const maxPrompt = this.config.max_local_prompt_tokens ?? 0;
    if (maxPrompt > 0 && input.prompt_tokens > maxPrompt) soft = `prompt ${input.prompt_tokens} tokens > max_local_prompt_tokens ${maxPrompt}`;
    const rate = input.rates?.[l.name];
    const slo = this.config.slo_ms ?? 0;
    if (soft === undefined && slo > 0 && rate && rate.prefill_tokens_per_s > 0 && rate.decode_tokens_per_s > 0) {
      estimate = Math.round(
        (input.queue_wait_ms ?? 0) +
          (input.prompt_tokens / rate.prefill_tokens_per_s) * 1000 +
          (localMax / rate.decode_tokens_per_s) * 1000,
      );
      if (estimate > slo) soft = `est. local ${estimate} ms > slo_ms ${slo}`;
    }
    if (soft !== undefined) {
      if (cloudBlock === undefined) return toCloud(soft, true);
      return toLocal(`${soft}, but ${cloudBlock}`, estimate);
    }
    if (input.local_only || input.role_local_only) return toLocal(cloudBlock!, estimate);
    if (estimate !== undefined) return toLocal(`est. local ${estimate} ms <= slo_ms ${slo}`, estimate);
    return toLocal(`fits local model ${l.name}`);
  }

  /**
   * A request with image or audio parts: the local models read text only, so the upstream answers it
   * or nobody does (never a local fallback, which would answer without seeing the parts).
   */
  private multimodal(input: RouteInput, requested: RequestedRoute, cloudModel: string | undefined, cloudBlock: string | undefined, localName: string | undefined): RouteDecision {
    const kinds = mediaKinds(input.media!);
    const what = `the request has ${kinds} parts, which only the upstream reads (the local models read text)`;
    if (input.local_only) return refuse('E_BAD_REQUEST', `${what}, and local_only keeps it on this node: drop local_only, or send the text without the ${kinds}`);
    if (requested === 'local') return refuse('E_BAD_REQUEST', `${what}, and route "local" was asked for: send route "auto" or "cloud", or send the text without the ${kinds}`);
    if (cloudBlock !== undefined) {
      const advice =
        cloudModel === undefined && cloudBlock === 'no upstream configured'
          ? `set upstream.url and upstream.model to a server with a model that reads ${kinds}, or send the text without the ${kinds}`
          : cloudBlock === BREAKER_OPEN
            ? 'retry once the upstream is back (its circuit breaker is open after recent failures)'
            : !input.allowed_routes.includes('cloud') || input.role_local_only
              ? `ask an operator for a role with the cloud route that is not local_only (edgellm grant DEVICE ROLE --for 2h), or send the text without the ${kinds}`
              : `send the text without the ${kinds}`;
      return refuse('E_NO_ROUTE', `${what}, but ${cloudBlock}: ${advice}`);
    }
    const local = localName !== undefined ? `; local model ${localName} reads text only` : '';
    return { ok: true, route: 'cloud', reason: `multimodal input (${kinds})${local}`, model: cloudModel! };
  }

  /** Which local model and which upstream model a request's model (name or class) means. */
  private resolve(model: string | undefined): { local?: string; cloud?: string; noLocal: string } | { error: EdgeError } {
    const upstreamDefault = this.config.upstream?.model;
    if (model === undefined || model === this.defaultModel) {
      return { ...opt('local', this.defaultModel), ...opt('cloud', upstreamDefault), noLocal: 'no local model configured' };
    }
    if (this.locals.has(model)) return { local: model, ...opt('cloud', upstreamDefault), noLocal: '' };
    if (this.upstreamModels.has(model)) return { cloud: model, noLocal: `model ${model} is only upstream` };
    const target = this.config.classes?.[model];
    if (target === CLOUD_TARGET) return { ...opt('cloud', upstreamDefault), noLocal: `class ${model} maps to the cloud` };
    if (target !== undefined) return { local: target, ...opt('cloud', upstreamDefault), noLocal: '' };
    const known = [...this.locals.keys(), ...this.upstreamModels, ...Object.keys(this.config.classes ?? {})];
    return {
      error: new EdgeError('E_UNKNOWN_MODEL', `model "${model}" is not served here: name one of ${known.join(', ') || '(none configured)'}, or leave model out for the default`),
    };
  }
}

function opt<K extends string>(key: K, v: string | undefined): { [P in K]?: string } {
  return (v === undefined ? {} : { [key]: v }) as { [P in K]?: string };
}

const BREAKER_OPEN = 'upstream circuit open';
const CONTEXT_ADVICE = "shorten the prompt or lower max_tokens (this node's context is engine.context_size)";

function tooLongText(prompt: number, max: number, local: LocalModelSpec): string {
  return `the prompt is ${prompt} tokens and max_tokens is ${max} (${prompt + max} in all) for model ${local.name}, but the context holds ${local.context_size}`;
}

function refuse(code: 'E_FORBIDDEN' | 'E_NO_ROUTE' | 'E_BAD_REQUEST' | 'E_PROMPT_TOO_LONG', message: string): RouteDecision {
  return { ok: false, error: new EdgeError(code, message) };
}

function localAdvice(local: LocalModelSpec | undefined): string {
  return local === undefined
    ? 'name a local model or class, or retry when the upstream is available'
    : 'shorten the prompt or lower max_tokens, or retry when the upstream is available';
}

/** What `edgellm bench` or the config gives as a starting point; learned rates replace it gradually. */
export type RateSeed = Readonly<Record<string, LocalRate>>;

/**
 * Local speeds learned online: an exponentially weighted moving average of what each finished
 * generation measured, starting from seeds (bench figures). Observations under load are what the
 * router should expect under load, so batching effects are part of the rate on purpose.
 */
export class LocalRates {
  /** Weight of the newest observation. */
  readonly alpha: number;
  private readonly rates = new Map<string, { prefill_tokens_per_s: number | undefined; decode_tokens_per_s: number | undefined }>();

  constructor(seed: RateSeed = {}, alpha = 0.2) {
    if (!(alpha > 0 && alpha <= 1)) throw new EdgeError('E_CONFIG', `the rate smoothing factor must be in (0, 1], got ${alpha}`);
    this.alpha = alpha;
    for (const [model, r] of Object.entries(seed)) {
      this.rates.set(model, { prefill_tokens_per_s: positive(r.prefill_tokens_per_s), decode_tokens_per_s: positive(r.decode_tokens_per_s) });
    }
  }

  /**
   * One finished local generation's figures (GenerateResult usage + timings). Prompts shorter than
   * MIN_PREFILL_TOKENS and single-token completions say little about speed and are skipped.
   */
  observe(model: string, m: { prompt_tokens: number; prompt_ms: number; decode_tokens_per_s: number }): void {
    const r = this.rates.get(model) ?? { prefill_tokens_per_s: undefined, decode_tokens_per_s: undefined };
    if (m.prompt_tokens >= MIN_PREFILL_TOKENS && m.prompt_ms > 0) {
      r.prefill_tokens_per_s = this.blend(r.prefill_tokens_per_s, (m.prompt_tokens / m.prompt_ms) * 1000);
    }
    if (m.decode_tokens_per_s > 0) r.decode_tokens_per_s = this.blend(r.decode_tokens_per_s, m.decode_tokens_per_s);
    this.rates.set(model, r);
  }

  /** Models with both rates known. */
  snapshot(): Record<string, LocalRate> {
    const out: Record<string, LocalRate> = {};
    for (const [model, r] of this.rates) {
      if (r.prefill_tokens_per_s !== undefined && r.decode_tokens_per_s !== undefined) {
        out[model] = { prefill_tokens_per_s: r.prefill_tokens_per_s, decode_tokens_per_s: r.decode_tokens_per_s };
      }
    }
    return out;
  }

  private blend(old: number | undefined, x: number): number {
    return old === undefined ? x : old + this.alpha * (x - old);
  }
}

/** Fewer prompt tokens than this measure overhead more than prefill speed. */
export const MIN_PREFILL_TOKENS = 16;

function positive(x: number | undefined): number | undefined {
  return x !== undefined && Number.isFinite(x) && x > 0 ? x : undefined;
}
