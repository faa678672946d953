/**
 * The audit log in SQLite: one append-only row per request, grant, revoke and config load (the
 * records of src/policy/audit.ts, kept whole as JSON). Triggers refuse UPDATE, DELETE and
 * replacing INSERTs; rows leave only through prune(), which deletes what is older than the
 * retention (never less than a day). Prompt text is kept only when the log was opened with
 * storePrompts (audit.store_prompts), whatever the writer put in the record.
 */
import type { AuditRecord, AuditSink } from '../policy/audit.js';
import { EdgeError } from '../errors.js';
import type { Db } from './database.js';

const DAY_MS = 24 * 3600 * 1000;

export interface AuditEntry {
  /** Position in the log: increases with every write, never reused. */
  seq: number;
  record: AuditRecord;
}

export interface AuditQuery {
  /** Records at or after this time (ms since the epoch). */
  since?: number | undefined;
  /** Only this device's records (requests, grants, revokes). */
  device?: string | undefined;
  type?: AuditRecord['type'] | undefined;
  /** The newest this many of those that match (default: all). */
  limit?: number | undefined;
}

export interface AuditLogOptions {
  /** Keep RequestAudit.prompt (audit.store_prompts); otherwise it is dropped before the write. */
  storePrompts?: boolean;
  /** Told about a record that could not be written (write() itself never throws). */
  onError?: (err: Error, record: AuditRecord) => void;
}

interface Row {
  seq: number;
  record: string;
}

export class SqliteAuditLog implements AuditSink {
  private readonly db: Db;
  private readonly insertStmt;
  private readonly gateStmt;
  private readonly pruneStmt;
  private readonly storePrompts: boolean;
  private readonly onError: ((err: Error, record: AuditRecord) => void) | undefined;
  /** Records write() could not store since this log was opened. */
  failures = 0;

  constructor(db: Db, opts: AuditLogOptions = {}) {
    this.db = db;
    this.storePrompts = opts.storePrompts ?? false;
    this.onError = opts.onError;
    this.insertStmt = db.prepare<[number, string, string | null, string]>('INSERT INTO audit (time, type, device, record) VALUES (?, ?, ?, ?)');
    this.gateStmt = db.prepare<[number]>('UPDATE audit_prune SET prune_before = ? WHERE id = 1');
    this.pruneStmt = db.prepare<[number]>('DELETE FROM audit WHERE time < ?');
  }

  /** Appends one record (in the caller's transaction, if any); throws E_STORE when it cannot. */
  append(record: AuditRecord): number {
    const kept = record.type === 'request' && record.prompt !== undefined && !this.storePrompts ? withoutPrompt(record) : record;
    const device = kept.type === 'config' ? null : kept.device;
    try {
      return Number(this.insertStmt.run(kept.time, kept.type, device, JSON.stringify(kept)).lastInsertRowid);
    } catch (err) {
      throw new EdgeError('E_STORE', `cannot append a ${record.type} record to the audit log: ${(err as Error).message}`, { cause: err });
    }
  }

  /** AuditSink: append() that never throws; a failure is counted and reported to onError. */
  write(record: AuditRecord): void {
    try {
      this.append(record);
    } catch (err) {
      this.failures++;
      try {
        this.onError?.(err instanceof Error ? err : new Error(String(err)), record);
      } catch {
        // the reporter failing must not take the request down with it
      }
    }
  }

  /** Matching records, oldest first (by time, then by position in the log); with a limit, the newest that many. */
  query(q: AuditQuery = {}): AuditEntry[] {
    const { filter, args } = where(q);
    const limit = q.limit !== undefined ? 'LIMIT ?' : '';
    if (q.limit !== undefined) args.push(q.limit);
    const rows = this.db.prepare<Array<string | number>, Row>(`SELECT seq, record FROM audit ${filter} ORDER BY time DESC, seq DESC ${limit}`).all(...args);
    return rows.reverse().map((r) => ({ seq: r.seq, record: JSON.parse(r.record) as AuditRecord }));
  }

  /** How many records match (the limit is ignored). */
  count(q: AuditQuery = {}): number {
    const { filter, args } = where(q);
    return this.db.prepare<Array<string | number>, { n: number }>(`SELECT count(*) AS n FROM audit ${filter}`).get(...args)!.n;
  }

  /**
   * Deletes the records older than `retentionDays` (at least 1) before now, in one transaction with
   * the gate the triggers check; returns how many went.
   */
  prune(retentionDays: number): number {
    if (!(Number.isFinite(retentionDays) && retentionDays >= 1)) {
      throw new EdgeError('E_BAD_ARGUMENT', `the audit retention must be at least 1 day, got ${retentionDays}`);
    }
    const before = Date.now() - Math.round(retentionDays * DAY_MS);
    return this.db.transaction(() => {
      this.gateStmt.run(before);
      const n = this.pruneStmt.run(before).changes;
      this.gateStmt.run(0);
      return n;
    })();
  }
}

function where(q: AuditQuery): { filter: string; args: Array<string | number> } {
  const terms: string[] = [];
  const args: Array<string | number> = [];
  if (q.since !== undefined) {
    terms.push('time >= ?');
    args.push(q.since);
  }
  if (q.device !== undefined) {
    terms.push('device = ?');
    args.push(q.device);
  }
  if (q.type !== undefined) {
    terms.push('type = ?');
    args.push(q.type);
  }
  return { filter: terms.length > 0 ? `WHERE ${terms.join(' AND ')}` : '', args };
}

function withoutPrompt<T extends { prompt?: string | undefined }>(r: T): T {
  const copy = { ...r };
  delete copy.prompt;
  return copy;
}
