/**
 * The daemon's outgoing QoS 2 packets (MQTT.js's outgoingStore keeps them here, through
 * transport/mqtt/packet-store.ts), so that a daemon killed in the middle of a QoS 2 handshake finishes
 * it after the restart (PUBLISH again with the same packet id, which the broker recognizes, or PUBREL)
 * instead of publishing the reply anew.
 *
 * Each stored PUBLISH is linked, in the same commit, to the outbox row it carries: from then on the
 * outbox leaves that row to MQTT.js (Outbox.pending() skips it). When the handshake completes the
 * packet and its outbox row are deleted together, so there is no moment at which a restart would find
 * a reply both delivered and still waiting. A PUBLISH the broker refused (an error in its PUBREC) is
 * deleted without its row, which is unlinked and published again like any other waiting reply.
 */
import type { Db } from './database.js';

/** A packet as MQTT.js keeps it, serialized by the transport. */
export interface StoredPacket {
  packetId: number;
  /** 'publish' until the broker's PUBREC, then 'pubrel'. */
  cmd: 'publish' | 'pubrel';
  packet: string;
}

export class OutgoingPackets {
  private readonly putStmt;
  private readonly linkStmt;
  private readonly getStmt;
  private readonly allStmt;
  private readonly delStmt;
  private readonly dropRowStmt;
  private readonly unlinkStmt;
  private readonly putTx;
  private readonly delTx;

  constructor(db: Db) {
    this.putStmt = db.prepare<[number, string, string]>('INSERT OR REPLACE INTO mqtt_outgoing (packet_id, cmd, packet) VALUES (?, ?, ?)');
    // The oldest waiting row with this topic and payload: rows that equal are interchangeable.
    this.linkStmt = db.prepare<[number, string, string]>(
      'UPDATE outbox SET packet_id = ? WHERE seq = (SELECT min(seq) FROM outbox WHERE packet_id IS NULL AND topic = ? AND payload = ?)',
    );
    this.getStmt = db.prepare<[number], StoredPacket>(
      'SELECT packet_id AS packetId, cmd, packet FROM mqtt_outgoing WHERE packet_id = ?',
    );
    this.allStmt = db.prepare<[], StoredPacket>('SELECT packet_id AS packetId, cmd, packet FROM mqtt_outgoing ORDER BY packet_id');
    this.delStmt = db.prepare<[number]>('DELETE FROM mqtt_outgoing WHERE packet_id = ?');
    this.dropRowStmt = db.prepare<[number]>('DELETE FROM outbox WHERE packet_id = ?');
    this.unlinkStmt = db.prepare<[number]>('UPDATE outbox SET packet_id = NULL WHERE packet_id = ?');
    this.putTx = db.transaction((p: StoredPacket, carries: { topic: string; payload: string } | undefined) => {
      this.putStmt.run(p.packetId, p.cmd, p.packet);
      if (p.cmd === 'publish' && carries) this.linkStmt.run(p.packetId, carries.topic, carries.payload);
    });
    this.delTx = db.transaction((packetId: number): StoredPacket | undefined => {
      const stored = this.getStmt.get(packetId);
      if (!stored) return undefined;
      // PUBREL was stored only after a PUBREC without an error: the broker has the reply.
      if (stored.cmd === 'pubrel') this.dropRowStmt.run(packetId);
      else this.unlinkStmt.run(packetId);
      this.delStmt.run(packetId);
      return stored;
    });
  }

  /**
   * Stores (or replaces, PUBLISH -> PUBREL) a packet; a PUBLISH whose topic and payload are an outbox
   * row's takes that row over, in the same commit.
   */
  put(p: StoredPacket, carries?: { topic: string; payload: string }): void {
    this.putTx(p, carries);
  }

  get(packetId: number): StoredPacket | undefined {
    return this.getStmt.get(packetId);
  }

  /** Every stored packet, by packet id: what MQTT.js sends again after a (re)connect. */
  all(): StoredPacket[] {
    return this.allStmt.all();
  }

  /** The handshake ended: forgets the packet (and its outbox row, if the broker took it); returns it. */
  del(packetId: number): StoredPacket | undefined {
    return this.delTx(packetId);
  }
}
