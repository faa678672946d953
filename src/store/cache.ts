/**
 * Answers to deterministic requests, keyed by the model file's identity and everything that decides the
 * output. Only requests with temperature 0 (greedy) or a seed are deterministic; others are never cached.
 */
import { createHash } from 'node:crypto';
import { SAMPLING_DEFAULTS } from '../engine/generate.js';
import type { Db } from './database.js';

/** The request fields that decide a generation's text. */
export interface CacheableRequest {
  prompt?: string | undefined;
  messages?: { role: string; content: string }[] | undefined;
  max_tokens?: number | undefined;
  temperature?: number | undefined;
  top_p?: number | undefined;
  top_k?: number | undefined;
  min_p?: number | undefined;
  seed?: number | undefined;
  stop?: string[] | undefined;
  /** A LoRA adapter of the model, by name (CacheModel.adapters says which file and scale). */
  adapter?: string | undefined;
}

export interface CachedAnswer {
  text: string;
  finish_reason: 'stop' | 'length';
  usage: { prompt_tokens: number; completion_tokens: number };
}

export function isDeterministic(r: CacheableRequest): boolean {
  return r.temperature === 0 || r.seed !== undefined;
}

/** The model as the cache sees it: which weights, and how much context they run with. */
export interface CacheModel {
  /** The model file's fingerprint (LocalModel.identity), never its name: a file replaced under the same name is another model. */
  identity: string;
  /** engine.context_size in use: a default max_tokens is shortened to the room the context leaves. */
  contextSize: number;
  /** Its adapters by name -> the adapter file's fingerprint and scale (LocalModel.adapters). */
  adapters?: ReadonlyMap<string, string> | undefined;
}

/**
 * sha256 over the model's identity and the request normalized to what decides its text, so equivalent
 * requests share an entry and different ones never do:
 * - prompt and messages stay apart (messages go through the chat template);
 * - greedy (temperature 0) ignores the seed, top_k, top_p and min_p, as the sampler does;
 * - otherwise every sampling parameter is spelled out, an absent one as the engine's default;
 * - stop strings are a set: order and repeats do not change where the text ends.
 */
export function cacheKey(model: CacheModel, r: CacheableRequest): string {
  const greedy = r.temperature === 0;
  const sampling = greedy
    ? { temperature: 0 }
    : {
        temperature: r.temperature ?? SAMPLING_DEFAULTS.temperature,
        top_k: r.top_k ?? SAMPLING_DEFAULTS.top_k,
        top_p: r.top_p ?? SAMPLING_DEFAULTS.top_p,
        min_p: r.min_p ?? SAMPLING_DEFAULTS.min_p,
        seed: r.seed,
      };
  const normalized = {
    v: 2,
    model: model.identity,
    context: model.contextSize,
    input: r.messages !== undefined ? { messages: r.messages.map((m) => [m.role, m.content]) } : { prompt: r.prompt ?? '' },
    max_tokens: r.max_tokens,
    sampling,
    stop: [...new Set(r.stop ?? [])].sort(),
    // An adapter's answers are another model's: keyed by its file and scale (absent: the v2 key as before).
    ...(r.adapter !== undefined ? { adapter: model.adapters?.get(r.adapter) ?? `unknown:${r.adapter}` } : {}),
  };
  return createHash('sha256').update(JSON.stringify(normalized)).digest('hex');
}

export class AnswerCache {
  private readonly getStmt;
  private readonly touchStmt;
  private readonly putStmt;
  private readonly trimStmt;
  private hits = 0;
  private lookups = 0;

  constructor(db: Db, private readonly maxEntries: number) {
    this.getStmt = db.prepare<[string], { result: string }>('SELECT result FROM cache WHERE key = ?');
    this.touchStmt = db.prepare<[number, string]>('UPDATE cache SET used_at = ?, hits = hits + 1 WHERE key = ?');
    this.putStmt = db.prepare<[string, string, string, number, number]>(
      'INSERT OR REPLACE INTO cache (key, model, result, created_at, used_at) VALUES (?, ?, ?, ?, ?)',
    );
    this.trimStmt = db.prepare<[number]>(
      'DELETE FROM cache WHERE key IN (SELECT key FROM cache ORDER BY used_at DESC LIMIT -1 OFFSET ?)',
    );
  }

  get(key: string): CachedAnswer | undefined {
    this.lookups++;
    const row = this.getStmt.get(key);
    if (!row) return undefined;
    this.hits++;
    this.touchStmt.run(Date.now(), key);
    return JSON.parse(row.result) as CachedAnswer;
  }

  put(key: string, model: string, answer: CachedAnswer): void {
    const now = Date.now();
    this.putStmt.run(key, model, JSON.stringify(answer), now, now);
    this.trimStmt.run(this.maxEntries);
  }

  /** Hits over lookups since this process started (0 before the first lookup). */
  hitRate(): number {
    return this.lookups === 0 ? 0 : this.hits / this.lookups;
  }
}
