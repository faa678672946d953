/**
 * Accepted requests, one row per (device, id): written before the PUBACK leaves, so a request the broker
 * saw acknowledged is never lost; the final reply is kept so a repeated id gets the same answer.
 */
import type { Db } from './database.js';

export type RequestState = 'queued' | 'running' | 'done' | 'error' | 'cancelled';

export interface StoredRequest {
  device: string;
  id: string;
  /** The validated request as JSON text. */
  payload: string;
  replyTopic: string;
  correlation: Buffer | null;
  state: RequestState;
  /** The final message (done or error) as JSON text, once there is one. */
  reply: string | null;
  receivedAt: number;
  deadlineAt: number | null;
  /** What its replies carry as traceparent (src/protocol/trace-context.ts); null in rows from before tracing. */
  traceparent?: string | null;
  /** Where its streamed reply stands (all zero when nothing was streamed). */
  stream: StreamMark;
}

/**
 * What a streaming device was sent: `seq` stream messages published (chunks, fallback, restart; the
 * next one's seq), `acked` of them acknowledged by the broker, and the text it holds now, `chars`
 * UTF-16 units since the last restart or fallback message, whose sha256 (UTF-16LE) is `hash`.
 */
export interface StreamMark {
  seq: number;
  acked: number;
  chars: number;
  hash: string | null;
}

export const NOTHING_STREAMED: StreamMark = { seq: 0, acked: 0, chars: 0, hash: null };

interface Row {
  device: string;
  id: string;
  payload: string;
  reply_topic: string;
  correlation: Buffer | null;
  state: RequestState;
  reply: string | null;
  received_at: number;
  deadline_at: number | null;
  traceparent: string | null;
  stream_seq: number;
  stream_acked: number;
  stream_chars: number;
  stream_hash: string | null;
}

const fromRow = (r: Row): StoredRequest => ({
  device: r.device,
  id: r.id,
  payload: r.payload,
  replyTopic: r.reply_topic,
  correlation: r.correlation,
  state: r.state,
  reply: r.reply,
  receivedAt: r.received_at,
  deadlineAt: r.deadline_at,
  traceparent: r.traceparent,
  stream: { seq: r.stream_seq, acked: r.stream_acked, chars: r.stream_chars, hash: r.stream_hash },
});

export class RequestLog {
  private readonly insertStmt;
  private readonly getStmt;
  private readonly openStmt;
  private readonly stateStmt;
  private readonly finishStmt;
  private readonly pruneStmt;
  private readonly streamedStmt;
  private readonly streamAckedStmt;

  constructor(private readonly db: Db) {
    this.insertStmt = db.prepare(
      `INSERT INTO requests (device, id, payload, reply_topic, correlation, state, received_at, deadline_at, traceparent)
       VALUES (@device, @id, @payload, @replyTopic, @correlation, 'queued', @receivedAt, @deadlineAt, @traceparent)
       ON CONFLICT (device, id) DO NOTHING`,
    );
    this.getStmt = db.prepare<[string, string], Row>('SELECT * FROM requests WHERE device = ? AND id = ?');
    this.openStmt = db.prepare<[], Row>(`SELECT * FROM requests WHERE state IN ('queued', 'running') ORDER BY received_at`);
    this.stateStmt = db.prepare<[RequestState, number | null, string, string]>(
      'UPDATE requests SET state = ?, started_at = ? WHERE device = ? AND id = ?',
    );
    this.finishStmt = db.prepare<[RequestState, string, number, string, string]>(
      'UPDATE requests SET state = ?, reply = ?, finished_at = ? WHERE device = ? AND id = ?',
    );
    this.pruneStmt = db.prepare<[number]>(`DELETE FROM requests WHERE state NOT IN ('queued', 'running') AND finished_at < ?`);
    this.streamedStmt = db.prepare<[number, number, string | null, string, string]>(
      'UPDATE requests SET stream_seq = ?, stream_chars = ?, stream_hash = ? WHERE device = ? AND id = ?',
    );
    this.streamAckedStmt = db.prepare<[number, string, string]>('UPDATE requests SET stream_acked = max(stream_acked, ?) WHERE device = ? AND id = ?');
  }

  /**
   * Records a stream message before it is published (seq, chars and hash as they will be once it is
   * out). Written once per chunk, so it commits without an fsync (synchronous=NORMAL): the WAL write
   * survives the process (kill -9), which is what a resume needs; a power cut loses the broker's
   * connection and the device's text with it.
   */
  markStreamed(device: string, id: string, mark: Omit<StreamMark, 'acked'>): void {
    this.relaxed(() => this.streamedStmt.run(mark.seq, mark.chars, mark.hash, device, id));
  }

  /** The broker acknowledged the stream messages before `seq` (they arrive in order). */
  streamAcknowledged(device: string, id: string, seq: number): void {
    this.relaxed(() => this.streamAckedStmt.run(seq, device, id));
  }

  private relaxed(write: () => void): void {
    if (this.db.inTransaction) return write();
    this.db.pragma('synchronous = NORMAL');
    try {
      write();
    } finally {
      this.db.pragma('synchronous = FULL');
    }
  }

  /** Inserts a new request as queued; an existing (device, id) is returned untouched instead. */
  accept(r: Omit<StoredRequest, 'state' | 'reply' | 'stream'>): { inserted: true } | { inserted: false; existing: StoredRequest } {
    const { device, id, payload, replyTopic, correlation, receivedAt, deadlineAt } = r;
    const info = this.insertStmt.run({ device, id, payload, replyTopic, correlation, receivedAt, deadlineAt, traceparent: r.traceparent ?? null });
    if (info.changes === 1) return { inserted: true };
    return { inserted: false, existing: this.get(r.device, r.id)! };
  }

  get(device: string, id: string): StoredRequest | undefined {
    const row = this.getStmt.get(device, id);
    return row ? fromRow(row) : undefined;
  }

  /** Requests accepted but not answered (queued, or running when the process stopped), oldest first. */
  unanswered(): StoredRequest[] {
    return this.openStmt.all().map(fromRow);
  }

  markRunning(device: string, id: string, at: number): void {
    this.stateStmt.run('running', at, device, id);
  }

  markQueued(device: string, id: string): void {
    this.stateStmt.run('queued', null, device, id);
  }

  finish(device: string, id: string, state: 'done' | 'error' | 'cancelled', reply: string, at: number): void {
    this.finishStmt.run(state, reply, at, device, id);
  }

  /** Forgets answered requests finished before `before` (ms since the epoch); returns how many. */
  prune(before: number): number {
    return this.pruneStmt.run(before).changes;
  }
}
