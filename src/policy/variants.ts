/**
 * A/B variants: a model name whose traffic is split between other configured models (config
 * `variants.NAME: [{model, weight}]`). Each device lands on one variant by a stable hash of (device id,
 * model name) into the cumulative weights, so a device keeps its variant across requests and restarts
 * and a split is fair over many devices; a request may name its variant instead. A variant is named by
 * the model it routes to.
 */
import { createHash } from 'node:crypto';
import { EdgeError } from '../errors.js';

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
