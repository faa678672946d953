/**
 * MQTT.js's outgoingStore for the daemon's session: the QoS 2 packets (the final replies: PUBLISH
 * until the broker's PUBREC, then PUBREL) live in SQLite (store/packets.ts), so after a kill -9 the
 * restarted daemon, with the same client id and the broker's session still there, sends them again
 * with their packet ids and completes their handshakes: the broker recognizes the PUBLISH it already
 * has, and a device subscribed at QoS 2 gets the reply once. QoS 1 packets (chunks, status) stay in
 * memory, as in MQTT.js's default store: a restart sends its stream anew (daemon/request/reply-stream.ts).
 *
 * No incomingStore: the daemon subscribes at QoS 1 and recognizes a repeated request by its id.
 */
import { Readable } from 'node:stream';
import type { IStore, Packet } from 'mqtt';
import type { OutgoingPackets, StoredPacket } from '../../store/index.js';

type Callback = (err?: Error, packet?: Packet) => void;

/** JSON with Buffers (payload, correlation data) as {"$base64": "..."}; the replacer sees them before toJSON. */
function encode(packet: Packet): string {
  return JSON.stringify(packet, function (this: Record<string, unknown>, key, value: unknown) {
    const raw = this[key];
    return Buffer.isBuffer(raw) ? { $base64: raw.toString('base64') } : value;
  });
}

function decode(stored: StoredPacket): Packet {
  return JSON.parse(stored.packet, (_key, value: unknown) =>
    value !== null && typeof value === 'object' && typeof (value as { $base64?: unknown }).$base64 === 'string'
      ? Buffer.from((value as { $base64: string }).$base64, 'base64')
      : value,
  ) as Packet;
}

const durable = (p: Packet): p is Packet & { cmd: 'publish' | 'pubrel'; messageId: number } =>
  (p.cmd === 'publish' && p.qos === 2) || p.cmd === 'pubrel';

export class DurableOutgoingStore implements IStore {
  /** QoS 1 packets by packet id. */
  private readonly memory = new Map<number, Packet>();

  constructor(private readonly packets: OutgoingPackets) {}

  put(packet: Packet, cb: (err?: Error) => void): this {
    const id = (packet as { messageId?: number }).messageId ?? 0;
    if (!durable(packet)) {
      this.memory.set(id, packet);
      cb();
      return this;
    }
    try {
      const carries = packet.cmd === 'publish' ? { topic: packet.topic, payload: packet.payload.toString() } : undefined;
      this.packets.put({ packetId: id, cmd: packet.cmd, packet: encode(packet) }, carries);
    } catch (err) {
      cb(err as Error); // not stored, so not sent: the reply stays in the outbox
      return this;
    }
    this.memory.delete(id);
    cb();
    return this;
  }

  get(packet: Pick<Packet, 'messageId'>, cb: Callback): this {
    const id = packet.messageId ?? 0;
    const stored = this.memory.get(id) ?? this.fromDisk(() => this.packets.get(id));
    if (stored instanceof Error) cb(stored);
    else if (stored) cb(undefined, stored);
    else cb(new Error('missing packet'));
    return this;
  }

  del(packet: Pick<Packet, 'messageId'>, cb: Callback): this {
    const id = packet.messageId ?? 0;
    const inMemory = this.memory.get(id);
    if (inMemory) {
      this.memory.delete(id);
      cb(undefined, inMemory);
      return this;
    }
    const stored = this.fromDisk(() => this.packets.del(id));
    if (stored instanceof Error) cb(stored);
    else if (stored) cb(undefined, stored);
    else cb(new Error('missing packet'));
    return this;
  }

  /**
   * What MQTT.js sends again on connecting: the stored QoS 2 packets (a PUBLISH with DUP set, as a
   * redelivery must be), then the QoS 1 packets of this process.
   */
  createStream(): ReturnType<IStore['createStream']> {
    let stored: Packet[] = [];
    try {
      stored = this.packets.all().map((s) => {
        const p = decode(s);
        return p.cmd === 'publish' ? { ...p, dup: true } : p;
      });
    } catch {
      // the store is closed (shutting down): nothing to send again from it
    }
    // Typed as readable-stream's Readable; MQTT.js uses only read(), 'readable', 'end' and destroy(), which node's has.
    return Readable.from([...stored, ...this.memory.values()]) as unknown as ReturnType<IStore['createStream']>;
  }

  /** The database belongs to the daemon's store, which closes it. */
  close(cb: () => void): void {
    cb();
  }

  private fromDisk(read: () => StoredPacket | undefined): Packet | Error | undefined {
    try {
      const s = read();
      return s ? decode(s) : undefined;
    } catch (err) {
      return err as Error;
    }
  }
}
