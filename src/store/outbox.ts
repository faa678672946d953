/**
 * Final replies waiting for the broker. A row is written in the same transaction that finishes its
 * request and published at QoS 2; once MQTT.js has stored the PUBLISH (packets.ts) the row belongs to
 * that packet and goes when its handshake completes. Rows no packet carries (never handed to MQTT.js,
 * or refused by the broker) are published again after a crash or a lost connection.
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
  private readonly waitingStmt;

  constructor(db: Db) {
    this.addStmt = db.prepare<[string, string, Buffer | null, number, string | null]>(
      'INSERT INTO outbox (topic, payload, correlation, created_at, traceparent) VALUES (?, ?, ?, ?, ?)',
    );
    this.allStmt = db.prepare<[], OutboxMessage>('SELECT seq, topic, payload, correlation, traceparent FROM outbox WHERE packet_id IS NULL ORDER BY seq');
    this.delStmt = db.prepare<[number]>('DELETE FROM outbox WHERE seq = ?');
    this.countStmt = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM outbox');
    this.waitingStmt = db.prepare<[number], { n: number }>('SELECT count(*) AS n FROM outbox WHERE seq = ? AND packet_id IS NULL');
  }

  add(topic: string, payload: string, correlation: Buffer | null, traceparent: string | null = null): OutboxMessage {
    const seq = Number(this.addStmt.run(topic, payload, correlation, Date.now(), traceparent).lastInsertRowid);
    return { seq, topic, payload, correlation, traceparent };
  }

  /** The rows no stored packet carries, oldest first. */
  pending(): OutboxMessage[] {
    return this.allStmt.all();
  }

  /** Whether the row is still there and no packet carries it (it has not reached the broker by another path). */
  isPending(seq: number): boolean {
    return this.waitingStmt.get(seq)!.n === 1;
  }

  acknowledged(seq: number): void {
    this.delStmt.run(seq);
  }

  size(): number {
    return this.countStmt.get()!.n;
  }
}
