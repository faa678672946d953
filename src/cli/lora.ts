/**
 * `--lora PATH[:SCALE]` (repeatable) on generate, logits and serve: LoRA adapters in llama.cpp's
 * GGUF adapter format, each with its user scale (default 1). The scale is what follows the last
 * colon when that is a number; a path that itself ends in ":<number>" is written with ":1" after it.
 */
import { EdgeError } from '../errors.js';
import type { LoraChoice, Model } from '../engine/model.js';

export const LORA_FLAG = '--lora <path[:scale]>';
export const LORA_HELP = 'a LoRA adapter (llama.cpp GGUF adapter) with its scale, default 1 (repeat for more)';

export interface LoraFlag {
  path: string;
  scale: number;
}

/** "style.gguf:0.5" -> {path: 'style.gguf', scale: 0.5}; "style.gguf" -> scale 1. */
export function parseLoraFlag(value: string): LoraFlag {
  const colon = value.lastIndexOf(':');
  const tail = colon >= 0 ? value.slice(colon + 1) : '';
  let path = value;
  let scale = 1;
  if (colon >= 0 && /^\s*[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\s*$/i.test(tail)) {
    path = value.slice(0, colon);
    scale = Number(tail);
  } else if (colon >= 0 && /\.gguf$/i.test(value.slice(0, colon))) {
    throw new EdgeError('E_BAD_ARGUMENT', `--lora takes PATH[:SCALE] with SCALE a number such as 0.5, got "${value}"`);
  }
  if (path.trim() === '') throw new EdgeError('E_BAD_ARGUMENT', `--lora takes the path of an adapter .gguf file, then optionally :SCALE, got "${value}"`);
  if (!Number.isFinite(scale)) throw new EdgeError('E_BAD_ARGUMENT', `--lora: the scale must be a finite number, got "${tail}"`);
  return { path, scale };
}

/** `--lora A --lora B` -> parsed flags, in order (commander's collector: bad values fail at parse time). */
export const collectLora = (value: string, previous: LoraFlag[] = []): LoraFlag[] => [...previous, parseLoraFlag(value)];

/** Loads each adapter on the model: the request's lora list. */
export async function loadLoraFlags(model: Model, flags: readonly LoraFlag[] | undefined): Promise<LoraChoice[]> {
  const out: LoraChoice[] = [];
  for (const f of flags ?? []) out.push({ adapter: await model.loadAdapter(f.path), scale: f.scale });
  return out;
}
