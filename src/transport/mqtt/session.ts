/**
 * The daemon's MQTT 5 session: a persistent session (clean start off, session expiry > 0) so requests
 * published while the node is away wait at the broker; QoS 1 subscriptions; requests written to SQLite
 * inside MQTT.js's handleMessage hook, whose callback sends the PUBACK, so an acknowledged request is
 * on disk; final replies from the outbox at QoS 2, their packets kept in SQLite until the handshake
 * completes (packet-store.ts); presence as a retained status with a Last Will; metrics on a timer.
 * MQTT 3.1.1 only for the embedded broker (aedes), which has no MQTT 5.
 */
import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import type { DaemonConfig } from '../../config.js';
import type { Logger } from '../../log.js';
import { EdgeError } from '../../errors.js';
import { redactUrl } from '../../secret.js';
import type { OutgoingPackets } from '../../store/index.js';
import type { Outbox, OutboxMessage } from '../../store/outbox.js';
import type { Topics } from '../../protocol/topics.js';
import { withDeadline } from './deadline.js';
import { DurableOutgoingStore } from './packet-store.js';

/** What the session hands incoming messages to. */
/** A request as the transport received it: the payload still bytes (the daemon's intake decodes it). */
export interface IncomingRequest {
  device: string;
  payload: Buffer;
  /** MQTT 5 Response Topic, when the publisher set one. */
  responseTopic?: string | undefined;
  correlation?: Buffer | undefined;
  /** MQTT 5 Message Expiry Interval left when the broker forwarded it, in seconds. */
  expirySeconds?: number | undefined;
  /** The broker's redelivery of a message we may already have acknowledged (the DUP flag). */
  redelivered?: boolean | undefined;
  /** MQTT 5 user property `traceparent` (W3C Trace Context), as it came: the daemon validates it. */
  traceparent?: string | string[] | undefined;
}

/** A stream message's MQTT 5 user property `traceparent`, and what to run on its PUBACK. */
export interface ChunkOptions {
  traceparent?: string | null;
  acknowledged?: () => void;
}

/** How replies leave; the session implements it, the daemon calls it. */
export interface ReplyChannel {
  /** Whether chunk() publishes now (connected to the broker). */
  isOpen(): boolean;
  /**
   * A stream message (chunk, fallback, restart), published at QoS 1 if isOpen() (else dropped: the
   * caller sends the text later). `traceparent`: its MQTT 5 user property; `acknowledged` runs on
   * the broker's PUBACK.
   */
  chunk(topic: string, correlation: Buffer | null, payload: string, opts?: ChunkOptions): void;
  /** A final reply already in the outbox: publish it (QoS 2); it leaves the outbox when the broker has it. */
  deliver(message: OutboxMessage): void;
}

/** Where the session hands what arrives: the daemon's intake. */
export interface RequestSink {
  receive(msg: IncomingRequest, defaultReplyTopic: string): void;
  cancel(device: string, id: string): void;
}

/** MQTT 5 reason code 0x97: the broker's Receive Maximum (or another quota) was exceeded. */
const QUOTA_EXCEEDED = 151;

const json = { contentType: 'application/json', payloadFormatIndicator: true } as const;

/** A reply's MQTT 5 properties: JSON, the request's Correlation Data, its trace as the user property `traceparent`. */
function replyProperties(correlation: Buffer | null, traceparent: string | null | undefined) {
  return {
    ...json,
    ...(correlation ? { correlationData: correlation } : {}),
    ...(traceparent ? { userProperties: { traceparent } } : {}),
  };
}

export class MqttSession implements ReplyChannel {
  private client: MqttClient | undefined;
  /** Outbox rows handed to MQTT.js in this process and not yet acknowledged (MQTT.js resends those itself). */
  private readonly inflight = new Set<number>();
  /** Outbox rows waiting for a free slot under the broker's Receive Maximum, by seq (oldest first). */
  private readonly waiting = new Map<number, OutboxMessage>();
  /** From the broker's CONNACK (MQTT 5); 65535 when it sets none, and for MQTT 3.1.1. */
  private receiveMaximum = 65535;
  private metricsTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly deps: {
      config: DaemonConfig;
      topics: Topics;
      outbox: Outbox;
      /** Where MQTT.js keeps the final replies' QoS 2 packets (packet-store.ts). */
      packets: OutgoingPackets;
      sink: RequestSink;
      log: Logger;
      password: string | undefined;
      models: string[];
      metrics: () => object;
      /** More fields of the retained online status (the upstream and its breaker). */
      status?: () => object;
      /** Told when the broker connection comes and goes (systemd's STATUS line). */
      onConnection?: (connected: boolean) => void;
      /** The broker to use instead of broker.url (the embedded broker), and its MQTT version (default 5). */
      broker?: { url: string; protocolVersion: 4 | 5 };
    },
  ) {}

  /** Connects and subscribes; resolves on the first CONNACK, rejects if the broker refuses us. */
  async start(): Promise<void> {
    const { config, topics, log } = this.deps;
    const url = this.deps.broker?.url ?? config.broker.url;
    if (url === undefined) throw new EdgeError('E_CONFIG', 'no broker: set broker.url');
    const interrupted = this.deps.packets.all().length;
    if (interrupted > 0) this.deps.log.info(`finishing ${interrupted} QoS 2 handshake(s) of replies the last stop interrupted`);
    const client = mqtt.connect(url, this.options());
    // A password written into broker.url must not reach the journal.
    const shownUrl = redactUrl(url);
    this.client = client;
    client.handleMessage = (packet, done) => this.onPublish(packet, done);
    // Reconnect attempts repeat the same error every second: say each one once until we connect.
    let lastError = '';
    client.on('error', (err) => {
      if (err.message !== lastError) log.warn(`broker ${shownUrl}: ${err.message}`);
      lastError = err.message;
    });
    client.on('offline', () => {
      log.warn(`broker ${shownUrl} unreachable; retrying`);
      this.deps.onConnection?.(false);
    });
    client.on('connect', (connack) => {
      lastError = '';
      this.receiveMaximum = connack.properties?.receiveMaximum ?? 65535;
      log.info(`connected to ${shownUrl} as ${client.options.clientId} (session ${connack.sessionPresent ? 'resumed' : 'new'})`);
      this.announce();
      this.flushOutbox();
      this.deps.onConnection?.(true);
    });
    await new Promise<void>((resolve, reject) => {
      const onConnect = () => {
        client.off('error', onError);
        resolve();
      };
      const onError = (err: Error & { code?: unknown }) => {
        // Refusals (bad credentials, not authorized) will not heal by retrying; network errors may.
        // (MQTT 5 reason codes >= 128; MQTT 3.1.1 CONNACK return codes 1-5.)
        const refusal = this.protocolVersion === 5 ? (c: number) => c >= 128 : (c: number) => c >= 1 && c <= 5;
        if (typeof err.code === 'number' && refusal(err.code)) {
          client.off('connect', onConnect);
          client.end(true);
          reject(new EdgeError('E_BROKER', `${shownUrl} refused the connection: ${err.message}`));
        }
      };
      client.once('connect', onConnect);
      client.on('error', onError);
    });
    // Subscribed once: the session keeps the subscriptions; MQTT.js renews them when a broker lost it.
    const grants = await client.subscribeAsync({ [topics.requestFilter()]: { qos: 1 }, [topics.cancelFilter()]: { qos: 1 } });
    for (const g of grants) {
      if (g.qos > 2) throw new EdgeError('E_BROKER', `the broker refused the subscription to ${g.topic} (reason ${g.qos})${g.topic.startsWith('$share/') ? ': does it support shared subscriptions?' : ''}`);
    }
    log.info(`listening on ${topics.requestFilter()}`);
    this.metricsTimer = setInterval(() => this.publishMetrics(), config.metrics.interval_s * 1000);
    this.metricsTimer.unref();
  }

  isOpen(): boolean {
    return this.client?.connected === true;
  }

  chunk(topic: string, correlation: Buffer | null, payload: string, opts: ChunkOptions = {}): void {
    const client = this.client;
    if (!client?.connected) return;
    client.publish(topic, payload, { qos: 1, properties: replyProperties(correlation, opts.traceparent) }, (err) => {
      if (!err) opts.acknowledged?.();
    });
  }

  deliver(message: OutboxMessage): void {
    const client = this.client;
    if (!client?.connected || this.inflight.has(message.seq)) return; // sent on the next CONNACK
    // The broker refuses QoS 2 publishes beyond its Receive Maximum (mosquitto: 20) with "Quota
    // exceeded", and MQTT.js does not hold them back: wait for a slot, leaving half to the chunks.
    if (this.inflight.size >= this.maxFinalsInFlight()) {
      this.waiting.set(message.seq, message);
      return;
    }
    this.waiting.delete(message.seq);
    // A retry, the CONNACK's flush and the queue may all hold a row: publish it only while it waits.
    if (!this.stillPending(message.seq)) return;
    this.inflight.add(message.seq);
    const properties = replyProperties(message.correlation, message.traceparent);
    // QoS 2: its packet is stored with the outbox row (packet-store.ts), so a kill -9 in the middle of
    // the handshake is finished after the restart, never published twice; the row goes with the packet.
    client.publish(message.topic, message.payload, { qos: 2, properties }, (err) => {
      this.inflight.delete(message.seq);
      if (err) {
        this.deps.log.debug(`reply ${message.seq} not acknowledged (${err.message}); kept in the outbox`);
        // Over the quota after all (the chunks took slots): again in a second; anything else waits for the next CONNACK.
        if ((err as { code?: unknown }).code === QUOTA_EXCEEDED) setTimeout(() => this.deliver(message), 1000).unref();
      } else {
        try {
          this.deps.outbox.acknowledged(message.seq);
        } catch {
          // the store closed during shutdown: the row is sent again on the next start (at least once)
        }
      }
      for (const next of this.waiting.values()) {
        if (this.inflight.size >= this.maxFinalsInFlight()) break;
        this.deliver(next);
      }
    });
  }

  private stillPending(seq: number): boolean {
    try {
      return this.deps.outbox.isPending(seq);
    } catch {
      return false; // the store closed during shutdown: the next start sends what is left
    }
  }

  /** Half the broker's Receive Maximum. */
  private maxFinalsInFlight(): number {
    return Math.max(1, Math.floor(this.receiveMaximum / 2));
  }

  /** Says offline (retained) and disconnects, keeping the session so requests wait at the broker. */
  async stop(): Promise<void> {
    clearInterval(this.metricsTimer);
    const client = this.client;
    if (!client) return;
    this.client = undefined;
    if (client.connected) {
      await withDeadline(client.publishAsync(this.deps.topics.status(), this.statusPayload('offline'), { qos: 1, retain: true }), 2000).catch(() => undefined);
    }
    await withDeadline(client.endAsync(false), 3000).catch(() => client.endAsync(true));
  }

  private get protocolVersion(): 4 | 5 {
    return this.deps.broker?.protocolVersion ?? 5;
  }

  private options(): IClientOptions {
    const { config, topics } = this.deps;
    const tls = config.broker.tls;
    const opts: IClientOptions = {
      protocolVersion: this.protocolVersion,
      clean: false,
      clientId: config.broker.client_id ?? `edgellm-${config.node_id}`,
      keepalive: config.broker.keepalive_s,
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
      // MQTT 3.1.1 has no session expiry and no packet-size limit: the broker keeps a clean-start-off
      // session until it restarts, and the payload limit is checked on arrival only.
      ...(this.protocolVersion === 5
        ? { properties: { sessionExpiryInterval: config.broker.session_expiry_s, maximumPacketSize: maxPacketBytes(config.limits.max_payload_bytes) } }
        : {}),
      will: { topic: topics.status(), payload: Buffer.from(this.statusPayload('offline')), qos: 1, retain: true },
      rejectUnauthorized: tls.reject_unauthorized,
      outgoingStore: new DurableOutgoingStore(this.deps.packets),
    };
    if (config.broker.username) opts.username = config.broker.username;
    if (this.deps.password !== undefined) opts.password = this.deps.password;
    const read = (key: string, file: string | undefined) => {
      if (!file) return undefined;
      try {
        return readFileSync(file);
      } catch (err) {
        throw new EdgeError('E_CONFIG', `broker.tls.${key}: cannot read ${file}: ${(err as Error).message}`);
      }
    };
    const ca = read('ca_file', tls.ca_file);
    const cert = read('cert_file', tls.cert_file);
    const key = read('key_file', tls.key_file);
    if (ca) opts.ca = ca;
    if (cert) opts.cert = cert;
    if (key) opts.key = key;
    return opts;
  }

  private onPublish(packet: IPublishPacket, done: (err?: Error) => void): void {
    const { topics, sink, log } = this.deps;
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    const props = packet.properties;
    const requestDevice = topics.deviceOf(packet.topic, 'request');
    if (requestDevice !== undefined) {
      try {
        sink.receive(
          {
            device: requestDevice,
            payload,
            responseTopic: props?.responseTopic,
            correlation: props?.correlationData,
            expirySeconds: props?.messageExpiryInterval,
            redelivered: packet.dup,
            traceparent: props?.userProperties?.traceparent,
          },
          topics.response(requestDevice),
        );
      } catch (err) {
        // Not on disk, so not acknowledged: the broker delivers it again when we reconnect.
        log.error(`could not record a request from ${requestDevice}: ${(err as Error).message}`);
        done(err as Error);
        return;
      }
      done();
      return;
    }
    const cancelDevice = topics.deviceOf(packet.topic, 'cancel');
    if (cancelDevice !== undefined) {
      let id: unknown;
      try {
        id = (JSON.parse(payload.toString('utf8')) as { id?: unknown }).id;
      } catch {
        // handled below
      }
      if (typeof id === 'string' && id !== '') sink.cancel(cancelDevice, id);
      else log.info(`ignored a cancel from ${cancelDevice}: the payload must be {"id": "<request id>"}`);
    }
    done();
  }

  /** Publishes the retained online status again (its fields changed, e.g. the upstream breaker). */
  republishStatus(): void {
    if (this.client?.connected) this.announce();
  }

  private announce(): void {
    this.client?.publish(this.deps.topics.status(), this.statusPayload('online'), { qos: 1, retain: true });
  }

  private statusPayload(state: 'online' | 'offline'): string {
    const { config } = this.deps;
    return JSON.stringify({ state, node: config.node_id, ...(state === 'online' ? { models: this.deps.models, fleet_group: config.fleet.group ?? null, ...this.deps.status?.() } : {}) });
  }

  private flushOutbox(): void {
    const pending = this.deps.outbox.pending();
    if (pending.length > 0) this.deps.log.info(`sending ${pending.length} reply(s) waiting in the outbox`);
    for (const m of pending) this.deliver(m);
  }

  private publishMetrics(): void {
    if (!this.client?.connected) return;
    this.client.publish(this.deps.topics.metrics(), JSON.stringify({ node: this.deps.config.node_id, ...this.deps.metrics() }), { qos: 0 });
  }
}

/**
 * The largest packet the broker may send us (MQTT 5 Maximum Packet Size): 16 x limits.max_payload_bytes,
 * so a payload somewhat over the limit still reaches us and gets E_TOO_LARGE, while one that would take a
 * Pi's memory (hundreds of MB) is discarded by the broker instead.
 */
export function maxPacketBytes(maxPayloadBytes: number): number {
  return Math.min(maxPayloadBytes * 16 + 65536, 268435455);
}

