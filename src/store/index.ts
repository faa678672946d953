/**
 * The daemon's durable state: accepted requests, the reply outbox, the answer cache, temporary
 * grants and the audit log, in one SQLite file.
 */
import type { AuditRecord } from '../policy/audit.js';
import { SqliteAuditLog } from './audit.js';
import { AnswerCache } from './cache.js';
import { openDatabase, type Db } from './database.js';
import { SqliteGrantStore } from './grants.js';
import { Outbox, type OutboxMessage } from './outbox.js';
import { OutgoingPackets } from './packets.js';
import { RequestLog } from './requests.js';

export interface StoreOptions {
  cacheEntries: number;
  /** Create the state directory and database if missing (default true; the CLI passes false). */
  create?: boolean;
  /** Keep prompt text in audit records (audit.store_prompts; default false). */
  auditPrompts?: boolean;
  /** Told when an audit record could not be written (the write itself never throws). */
  onAuditError?: (err: Error, record: AuditRecord) => void;
}

export class Store {
  readonly requests: RequestLog;
  readonly outbox: Outbox;
  /** MQTT.js's outgoing QoS 2 packets, linked to the outbox rows they carry. */
  readonly packets: OutgoingPackets;
  readonly cache: AnswerCache;
  readonly grants: SqliteGrantStore;
  readonly audit: SqliteAuditLog;

  private constructor(private readonly db: Db, opts: StoreOptions) {
    this.requests = new RequestLog(db);
    this.outbox = new Outbox(db);
    this.packets = new OutgoingPackets(db);
    this.cache = new AnswerCache(db, opts.cacheEntries);
    this.grants = new SqliteGrantStore(db);
    this.audit = new SqliteAuditLog(db, {
      storePrompts: opts.auditPrompts ?? false,
      ...(opts.onAuditError ? { onError: opts.onAuditError } : {}),
    });
  }

  static open(stateDir: string, opts: StoreOptions): Store {
    return new Store(openDatabase(stateDir, { create: opts.create ?? true }), opts);
  }

  /**
   * Runs fn in one transaction: all of its writes commit together or not at all. `immediate` takes
   * the write lock up front (waiting up to busy_timeout), for a transaction that reads before it
   * writes while another process may write: a deferred one would fail with SQLITE_BUSY_SNAPSHOT.
   */
  atomically<T>(fn: () => T, opts: { immediate?: boolean } = {}): T {
    const tx = this.db.transaction(fn);
    return opts.immediate ? tx.immediate() : tx();
  }

  /** Records a request's final reply and queues it for publishing, in one commit. */
  finish(
    device: string,
    id: string,
    state: 'done' | 'error' | 'cancelled',
    reply: { topic: string; payload: string; correlation: Buffer | null; traceparent?: string | null },
  ): OutboxMessage {
    return this.atomically(() => {
      this.requests.finish(device, id, state, reply.payload, Date.now());
      return this.outbox.add(reply.topic, reply.payload, reply.correlation, reply.traceparent ?? null);
    });
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

export type { OutboxMessage } from './outbox.js';
export type { OutgoingPackets, StoredPacket } from './packets.js';
export { SqliteAuditLog, type AuditEntry, type AuditQuery } from './audit.js';
export { SqliteGrantStore } from './grants.js';
export { NOTHING_STREAMED, type StoredRequest, type RequestState, type StreamMark } from './requests.js';
export { cacheKey, isDeterministic, type CachedAnswer, type CacheableRequest, type CacheModel } from './cache.js';
