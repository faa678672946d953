/**
 * A/B variants: a model name whose traffic is split between other configured models (config
 * `variants.NAME: [{model, weight}]`). Each device lands on one variant by a stable hash of (device id,
 * model name) into the cumulative weights, so a device keeps its variant across requests and restarts
 * and a split is fair over many devices; a request may name its variant instead. A variant is named by
 * the model it routes to.
 */
import { createHash } from 'node:crypto';
import { EdgeError } from '../errors.js';
import type { AuditRecord } from './audit.js';

export interface Variant {
  /** The configured model (local, upstream or class) that answers for this variant. */
  model: string;
  /** Its share of the traffic: positive; the shares of one name are normalized to sum 1. */
  weight: number;
}

/**
 * The device's point in [0, 1): the first 48 bits of sha256(device \0 name). 48 bits fit a double
 * exactly, and salting with the model name keeps one device's variant of two A/B names independent.
 */
export function stickyPoint(device: string, name: string): number {
  const digest = createHash('sha256').update(device).update('\u0000').update(name).digest();
  return digest.readUIntBE(0, 6) / 2 ** 48;
}

/**
 * The variant of `name` for `device`: `override` when the request names one (E_UNKNOWN_VARIANT when it
 * is not one of `variants`), else the one whose slice of the cumulative weights holds the device's point.
 */
export function chooseVariant(variants: readonly Variant[], device: string, name: string, override?: string): Variant {
  if (variants.length === 0) throw new EdgeError('E_CONFIG', `variants.${name} lists no variant`);
  if (override !== undefined) {
    const v = variants.find((x) => x.model === override);
    if (!v) {
      throw new EdgeError('E_UNKNOWN_VARIANT', `"${override}" is not a variant of "${name}"; its variants are ${variants.map((x) => x.model).join(', ')} (or leave variant out for this device's own)`);
    }
    return v;
  }
  const total = variants.reduce((s, v) => s + v.weight, 0);
  const point = stickyPoint(device, name) * total;
  let upTo = 0;
  for (const v of variants) {
    upTo += v.weight;
    if (point < upTo) return v;
  }
  return variants[variants.length - 1]!; // rounding at the top end of the sum
}

/** The A/B name a request asked for and the variant (a model name) it runs as. */
export interface ChosenVariant {
  name: string;
  variant: string;
}

/**
 * The variant a request for `model` runs as when `model` has A/B variants (`key`: what it sticks to, the
 * device id), else undefined; a `variant` for any other model is E_UNKNOWN_VARIANT.
 */
export function variantFor(variants: Record<string, Variant[]>, model: string | undefined, key: string, variant: string | undefined): ChosenVariant | undefined {
  const list = model !== undefined ? variants[model] : undefined;
  if (list === undefined) {
    if (variant === undefined) return undefined;
    const names = Object.keys(variants);
    throw new EdgeError(
      'E_UNKNOWN_VARIANT',
      `"variant" is only for a model name with A/B variants (${names.length > 0 ? names.join(', ') : 'this node has none'}), not ${model === undefined ? 'the default model' : `"${model}"`}: leave it out`,
    );
  }
  return { name: model!, variant: chooseVariant(list, key, model!, variant).model };
}

/** How one variant did, from its requests' audit records (ab-report, `edgellm audit --by variant`). */
export interface VariantSummary {
  /** The A/B name a request asked for ("" for records from before a name's variants were recorded). */
  name: string;
  variant: string;
  /** Requests served by it or refused after it was chosen. */
  requests: number;
  /** Ended with an error or refused (an admission refusal, e.g. E_FORBIDDEN or E_NO_ROUTE) / requests. */
  error_rate: number;
  /** Answered from the answer cache / answered (outcome ok or cancelled). */
  cache_hit_rate: number;
  /** Mean decode rate of its generated (not cached, not relayed) answers; null when none. */
  mean_tokens_per_s: number | null;
  /** 95th percentile (nearest rank) of arrival-to-final-reply, over answered requests; null when none. */
  p95_latency_ms: number | null;
}

/** Per variant, in order of first appearance; records without a variant are left out. */
export function summarizeVariants(records: Iterable<AuditRecord>): VariantSummary[] {
  const groups = new Map<string, { name: string; variant: string; n: number; failed: number; answered: number; hits: number; rates: number[]; latencies: number[] }>();
  for (const r of records) {
    if (r.type !== 'request' || r.variant === undefined) continue;
    const name = r.variant_of ?? '';
    const key = `${name}\u0000${r.variant}`;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { name, variant: r.variant, n: 0, failed: 0, answered: 0, hits: 0, rates: [], latencies: [] }));
    g.n++;
    if (r.outcome === 'error' || r.outcome === 'denied') g.failed++;
    if (r.outcome !== 'ok' && r.outcome !== 'cancelled') continue;
    g.answered++;
    if (r.cached) g.hits++;
    else if (r.tokens_per_s !== undefined && r.tokens_per_s > 0) g.rates.push(r.tokens_per_s);
    if (r.total_ms !== undefined) g.latencies.push(r.total_ms);
  }
  return [...groups.values()].map((g) => ({
    name: g.name,
    variant: g.variant,
    requests: g.n,
    error_rate: g.failed / g.n,
    cache_hit_rate: g.answered > 0 ? g.hits / g.answered : 0,
    mean_tokens_per_s: g.rates.length > 0 ? g.rates.reduce((s, x) => s + x, 0) / g.rates.length : null,
    p95_latency_ms: g.latencies.length > 0 ? nearestRank(g.latencies, 0.95) : null,
  }));
}

function nearestRank(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
