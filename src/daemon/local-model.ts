/**
 * The production ModelOpener: the daemon's LocalModel port over the engine's loadModel and
 * Model.generate(). The engine rejects fields it does not know, so every parameter is mapped by name.
 */
import { basename } from 'node:path';
import { fileStamp, modelFingerprint, sameFile } from '../engine/fingerprint.js';
import { loadModel, type LoadModelOptions, type LoraChoice, type Model } from '../engine/model.js';
import type { ChatMessage } from '../engine/chat.js';
import type { GenerateRequest, Generation as EngineGeneration } from '../engine/generate.js';
import { EdgeError } from '../errors.js';
import type { DaemonConfig } from '../config.js';
import { SAMPLING_FIELDS, unknownAdapter, type GenerateParams, type GenerateResult, type Generation, type LocalModel, type ModelOpener } from './engine-port.js';

/** One of a model's LoRA adapters, as config adapters.MODEL lists them. */
export interface AdapterConfig {
  name: string;
  path: string;
  scale: number;
}

/** loadModel options from the config: engine.threads, engine.context_size, batch.max sequences. */
export function loadOptions(config: Pick<DaemonConfig, 'engine' | 'batch'>): LoadModelOptions {
  const opts: LoadModelOptions = { maxSequences: config.batch.max };
  if (config.engine.threads !== undefined) opts.threads = config.engine.threads;
  if (config.engine.context_size !== undefined) opts.contextSize = config.engine.context_size;
  return opts;
}

/** The engine's request for the daemon's parameters: only the fields the port defines (the engine refuses others). */
export function engineRequest(p: GenerateParams): GenerateRequest {
  const r: GenerateRequest = {};
  if (p.prompt !== undefined) r.prompt = p.prompt;
  // Roles are checked by the engine (validateMessages), which names a bad one.
  if (p.messages !== undefined) r.messages = p.messages as ChatMessage[];
  if (p.max_tokens !== undefined) r.max_tokens = p.max_tokens;
  for (const k of SAMPLING_FIELDS) if (p[k] !== undefined) (r as Record<string, unknown>)[k] = p[k];
  if (p.raw_logprobs) r.raw_logprobs = true;
  if (p.signal !== undefined) r.signal = p.signal;
  if (p.trace) r.trace = true;
  return r;
}

class EngineModel implements LocalModel {
  readonly name: string;
  readonly contextSize: number;
  readonly adapters: ReadonlyMap<string, string>;

  constructor(
    private readonly model: Model,
    path: string,
    readonly identity: string,
    /** Adapters loaded on the model, by name: the engine's choice and the cache's identity. */
    private readonly lora: ReadonlyMap<string, { choice: LoraChoice; identity: string }> = new Map(),
  ) {
    this.name = modelName(path);
    this.contextSize = model.info().context_size;
    this.adapters = new Map([...lora].map(([name, a]) => [name, a.identity]));
  }

  /** Tokens of the text as a prompt (BOS included when the model adds one). */
  countTokens(text: string): number {
    return this.model.tokenizer.encode(text).length;
  }

  /**
   * Throws EdgeError synchronously (E_BAD_REQUEST, E_PROMPT_TOO_LONG); the responder replies with its code.
   * The result carries the port's fields only (the engine's `sampling` and `stop` are not part of a reply).
   */
  generate(p: GenerateParams): Generation {
    const gen = this.start(p);
    const result: Promise<GenerateResult> = gen.result.then(({ text, finish_reason, usage, timings, steps, logprobs, raw_logprobs }) => ({
      text,
      finish_reason,
      usage,
      timings,
      ...(steps ? { steps } : {}),
      ...(logprobs ? { logprobs } : {}),
      ...(raw_logprobs ? { raw_logprobs } : {}),
    }));
    result.catch(() => {}); // a consumer that only iterates sees the error from next()
    const done = { value: undefined, done: true } as const;
    const it: Generation = {
      next: async () => {
        const r = await gen.next();
        return r.done ? done : r;
      },
      // `break` in a for-await loop cancels the generation.
      return: async () => {
        await gen.return();
        return done;
      },
      [Symbol.asyncIterator]() {
        return it;
      },
      result,
      logprobs: gen.logprobs,
    };
    return it;
  }

  private start(p: GenerateParams): EngineGeneration {
    const unknown = unknownAdapter(this, p.adapter);
    if (unknown) throw unknown;
    const lora = p.adapter !== undefined ? [this.lora.get(p.adapter)!.choice] : undefined;
    try {
      return this.model.generate({ ...engineRequest(p), ...(lora ? { lora } : {}) });
    } catch (err) {
      if (!(err instanceof EdgeError) || err.code !== 'E_PROMPT_TOO_LONG') throw err;
      // A default max_tokens gives way to the room the context has left (the engine's own default).
      if (p.max_tokens_fits_context && p.max_tokens !== undefined) return this.start({ ...p, max_tokens: undefined });
      // The engine's advice names loadModel's options; on this node the knob is the config's.
      throw new EdgeError(
        'E_PROMPT_TOO_LONG',
        `${err.message.split(';')[0]}; shorten the prompt or lower max_tokens (this node's context is engine.context_size)`,
      );
    }
  }

  async embed(input: string | number[]): Promise<{ embedding: Float32Array; tokens: number }> {
    const ids = typeof input === 'string' ? this.model.tokenizer.encode(input) : input;
    return { embedding: await this.model.embed(ids), tokens: ids.length };
  }

  async close(): Promise<void> {
    this.model.close();
  }
}

/** The name a request uses for a model file: its file name without .gguf. */
const modelName = (path: string) => basename(path).replace(/\.gguf$/i, '');

/** A ModelOpener that loads with the config's engine options and the model's adapters. */
export function localModelOpener(config: Pick<DaemonConfig, 'engine' | 'batch'> & Partial<Pick<DaemonConfig, 'adapters'>>): ModelOpener {
  return (path) => openLocalModel(path, loadOptions(config), config.adapters?.[modelName(path)] ?? []);
}

/**
 * Loads each configured adapter on the model; an adapter that does not load is E_CONFIG naming its
 * config key, with the engine's reason (the tensor that does not fit, another architecture...).
 */
async function loadAdapters(model: Model, name: string, adapters: readonly AdapterConfig[]): Promise<Map<string, { choice: LoraChoice; identity: string }>> {
  const out = new Map<string, { choice: LoraChoice; identity: string }>();
  for (const [i, a] of adapters.entries()) {
    try {
      const fingerprint = await modelFingerprint(a.path);
      out.set(a.name, { choice: { adapter: await model.loadAdapter(a.path), scale: a.scale }, identity: `${fingerprint.id}@${a.scale}` });
    } catch (err) {
      if (!(err instanceof EdgeError)) throw err;
      throw new EdgeError('E_CONFIG', `adapters.${name}[${i}] (${a.name}): ${err.code}: ${err.message}`, { cause: err });
    }
  }
  return out;
}

/** A file replaced this many times while it was being loaded is refused rather than guessed at. */
const LOAD_ATTEMPTS = 3;

/**
 * Loads the model and fingerprints the file it loaded: hashed first, then loaded, then checked to be
 * the same file (device, inode, size, mtime), so the identity is that of the weights in use even when
 * the file is replaced meanwhile.
 */
export async function openLocalModel(path: string, opts: LoadModelOptions = {}, adapters: readonly AdapterConfig[] = []): Promise<LocalModel> {
  for (let attempt = 1; ; attempt++) {
    const fingerprint = await modelFingerprint(path);
    const model = await loadModel(path, opts);
    if (sameFile(fingerprint.file, await fileStamp(path))) {
      try {
        return new EngineModel(model, path, fingerprint.id, await loadAdapters(model, modelName(path), adapters));
      } catch (err) {
        model.close();
        throw err;
      }
    }
    model.close();
    if (attempt === LOAD_ATTEMPTS) {
      throw new EdgeError('E_MODEL_CORRUPT', `${path} changed while it was being loaded, ${LOAD_ATTEMPTS} times: replace a model by renaming a complete file over it, then restart`);
    }
  }
}
