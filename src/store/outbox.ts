/**
 * Final replies waiting for the broker's PUBACK. A row is written in the same transaction that
 * finishes its request, published, and deleted only when the broker has acknowledged it; rows left
 * over from a crash or a lost connection are published again.
 */
import type { Db } from './database.js';

export interface OutboxMessage {
  seq: number;
  topic: string;
  payload: string;
  correlation: Buffer | null;
  /** Published as the MQTT 5 user property `traceparent` (the request's trace); null: none. */
  traceparent: string | null;
}

export class Outbox {
  private readonly addStmt;
  private readonly allStmt;
  private readonly delStmt;
  private readonly countStmt;

  constructor(db: Db) {
    this.addStmt = db.prepare<[string, string, Buffer | null, number, string | null]>(
      'INSERT INTO outbox (topic, payload, correlation, created_at, traceparent) VALUES (?, ?, ?, ?, ?)',
    );
    this.allStmt = db.prepare<[], OutboxMessage>('SELECT seq, topic, payload, correlation, traceparent FROM outbox ORDER BY seq');
    this.delStmt = db.prepare<[number]>('DELETE FROM outbox WHERE seq = ?');
    this.countStmt = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM outbox');
  }

  add(topic: string, payload: string, correlation: Buffer | null, traceparent: string | null = null): OutboxMessage {
    const seq = Number(this.addStmt.run(topic, payload, correlation, Date.now(), traceparent).lastInsertRowid);
    return { seq, topic, payload, correlation, traceparent };
  }

  pending(): OutboxMessage[] {
    return this.allStmt.all();
  }

  acknowledged(seq: number): void {
    this.delStmt.run(seq);
  }

  size(): number {
    return this.countStmt.get()!.n;
  }
}
