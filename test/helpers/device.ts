// A factory device on the broker: publishes requests (QoS 1, MQTT 5 properties) and records every reply.
import mqtt, { type MqttClient } from 'mqtt';

export interface Reply {
  topic: string;
  body: Record<string, unknown> & { id?: string | null; type?: string };
  correlation: Buffer | undefined;
  /** MQTT 5 user properties (the daemon's `traceparent`). */
  userProperties?: Record<string, string | string[]> | undefined;
}

export class Device {
  readonly replies: Reply[] = [];

  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      let body: Reply['body'];
      try {
        body = JSON.parse(payload.toString('utf8')) as Reply['body'];
      } catch {
        body = { raw: payload.toString('utf8') };
      }
      this.replies.push({ topic, body, correlation: packet.properties?.correlationData, userProperties: packet.properties?.userProperties });
    });
  }

  /** A persistent session (clean false), so replies published while the broker restarts still arrive. */
  static async connect(url: string, clientId: string, subscribe: string[]): Promise<Device> {
    const client = mqtt.connect(url, {
      protocolVersion: 5,
      clientId,
      clean: false,
      reconnectPeriod: 200,
      properties: { sessionExpiryInterval: 600 },
    });
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    if (subscribe.length > 0) await client.subscribeAsync(subscribe, { qos: 1 });
    return new Device(client);
  }

  /** Publishes at QoS 1 and resolves on the broker's PUBACK. */
  async publish(
    topic: string,
    payload: string | object,
    opts: { responseTopic?: string; correlation?: string; expirySeconds?: number; userProperties?: Record<string, string | string[]> } = {},
  ): Promise<void> {
    const properties: Record<string, unknown> = {};
    if (opts.responseTopic) properties.responseTopic = opts.responseTopic;
    if (opts.correlation) properties.correlationData = Buffer.from(opts.correlation);
    if (opts.expirySeconds !== undefined) properties.messageExpiryInterval = opts.expirySeconds;
    if (opts.userProperties) properties.userProperties = opts.userProperties;
    await this.client.publishAsync(topic, typeof payload === 'string' ? payload : JSON.stringify(payload), { qos: 1, properties });
  }

  /** Replies for one request id, in arrival order. */
  for(id: string | null): Reply[] {
    return this.replies.filter((r) => r.body.id === id);
  }

  /** Waits until `pred` holds for some reply; returns it. */
  async waitFor(pred: (r: Reply) => boolean, timeoutMs = 5000, what = 'a reply'): Promise<Reply> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.replies.find(pred);
      if (hit) return hit;
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.replies.map((r) => r.body))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** The final (done or error) reply of an id. */
  final(id: string | null, timeoutMs = 5000): Promise<Reply> {
    return this.waitFor((r) => r.body.id === id && (r.body.type === 'done' || r.body.type === 'embeddings' || r.body.type === 'error'), timeoutMs, `the final reply to ${id}`);
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
