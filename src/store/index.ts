/** The daemon's durable state: accepted requests, the reply outbox and the answer cache, in one SQLite file. */
import { AnswerCache } from './cache.js';
import { openDatabase, type Db } from './database.js';
import { Outbox, type OutboxMessage } from './outbox.js';
import { RequestLog } from './requests.js';

export class Store {
  readonly requests: RequestLog;
  readonly outbox: Outbox;
  readonly cache: AnswerCache;

  private constructor(private readonly db: Db, cacheEntries: number) {
    this.requests = new RequestLog(db);
    this.outbox = new Outbox(db);
    this.cache = new AnswerCache(db, cacheEntries);
  }

  static open(stateDir: string, opts: { cacheEntries: number }): Store {
    return new Store(openDatabase(stateDir), opts.cacheEntries);
  }

  /** Runs fn in one transaction: all of its writes commit together or not at all. */
  atomically<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  /** Records a request's final reply and queues it for publishing, in one commit. */
  finish(
    device: string,
    id: string,
    state: 'done' | 'error' | 'cancelled',
    reply: { topic: string; payload: string; correlation: Buffer | null },
  ): OutboxMessage {
    return this.atomically(() => {
      this.requests.finish(device, id, state, reply.payload, Date.now());
      return this.outbox.add(reply.topic, reply.payload, reply.correlation);
    });
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

export type { OutboxMessage } from './outbox.js';
export type { StoredRequest, RequestState } from './requests.js';
export { cacheKey, isDeterministic, type CachedAnswer, type CacheableRequest, type CacheModel } from './cache.js';
