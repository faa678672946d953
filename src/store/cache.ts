/**
 * Answers to deterministic requests, keyed by the model and everything that decides the output. Only
 * requests with temperature 0 (greedy) or a seed are deterministic; others are never cached.
 */
import { createHash } from 'node:crypto';
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
}

export interface CachedAnswer {
  text: string;
  finish_reason: 'stop' | 'length';
  usage: { prompt_tokens: number; completion_tokens: number };
}

export function isDeterministic(r: CacheableRequest): boolean {
  return r.temperature === 0 || r.seed !== undefined;
}

/** sha256 over the model name and the request's deciding fields in a fixed order; undefined left out. */
export function cacheKey(model: string, r: CacheableRequest): string {
  const normalized = {
    model,
    prompt: r.prompt,
    messages: r.messages?.map((m) => [m.role, m.content]),
    max_tokens: r.max_tokens,
    // With temperature 0 the seed does not matter; leave it out so both spellings share an entry.
    seed: r.temperature === 0 ? undefined : r.seed,
    temperature: r.temperature,
    top_p: r.top_p,
    top_k: r.top_k,
    min_p: r.min_p,
    stop: r.stop,
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
