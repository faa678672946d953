/**
 * One request as a factory device makes it (`edgellm request`): connect with MQTT 5 (or 3.1.1 when the
 * broker, such as the embedded aedes, refuses 5), subscribe to a reply topic of its own, publish the
 * request at QoS 1 and collect the replies until the final one. With MQTT 5 the reply topic travels as
 * the Response Topic with Correlation Data; with 3.1.1 as the request's `reply_to` field.
 *
 * Failures are EdgeErrors: E_BROKER when the broker cannot be reached, refuses us or drops the
 * connection, E_TIMEOUT when no final reply came in time (the request is then cancelled).
 */
import { randomBytes } from 'node:crypto';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { EdgeError } from '../../errors.js';
import { redactUrl } from '../../secret.js';
import { isPublishableTopic } from '../../protocol/topics.js';
import { withDeadline } from './deadline.js';

export interface DeviceConnection {
  url: string;
  username?: string;
  password?: string;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  rejectUnauthorized?: boolean;
}

export interface AskOptions {
  connection: DeviceConnection;
  prefix: string;
  device: string;
  /** The request's JSON fields (id included); reply_to is added for an MQTT 3.1.1 broker. */
  request: Record<string, unknown> & { id: string };
  timeoutMs: number;
  /** Each chunk's text, in order (seq 0, 1, ...); a chunk lost in between ends the calls. */
  onChunk?: (text: string) => void;
  /** Aborting sends a cancel for the request and rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** The final message: `done` or `error`, as the daemon sent it. */
export type FinalReply = Record<string, unknown> & { id: string; type: 'done' | 'error' };

export interface AskResult {
  reply: FinalReply;
  /** The text handed to onChunk: a prefix of the final text, unless the node's chunks disagree with it. */
  streamed: string;
  protocolVersion: 4 | 5;
}

/** MQTT 3.1.1's CONNACK code (and MQTT.js's error code) for "unacceptable protocol version". */
const UNACCEPTABLE_PROTOCOL = 1;

export async function askOverMqtt(opts: AskOptions): Promise<AskResult> {
  const { prefix, device, request } = opts;
  const requestTopic = `${prefix}/request/${device}`;
  if (!isPublishableTopic(requestTopic) || device.includes('/') || prefix.includes('/')) {
    throw new EdgeError('E_BAD_ARGUMENT', `the device id and prefix must each be one topic level without "/", "+" or "#", got "${device}" and "${prefix}"`);
  }
  const started = Date.now();
  const nonce = randomBytes(6).toString('hex');
  // The device's own default response topic, one level deeper: an ACL that lets a device read
  // <prefix>/response/<device>/# lets it read this.
  const replyTopic = `${prefix}/response/${device}/${nonce}`;

  let client: MqttClient;
  let protocolVersion: 4 | 5 = 5;
  try {
    client = await connect(opts.connection, 5, opts.timeoutMs);
  } catch (err) {
    if ((err as { code?: unknown }).code !== UNACCEPTABLE_PROTOCOL) throw brokerError(opts.connection.url, err);
    protocolVersion = 4;
    try {
      client = await connect(opts.connection, 4, Math.max(1000, opts.timeoutMs - (Date.now() - started)));
    } catch (err4) {
      throw brokerError(opts.connection.url, err4);
    }
  }

  try {
    return await exchange(client, protocolVersion);
  } catch (err) {
    // MQTT.js's own failures (a subscribe or publish on a connection that went away) say which broker.
    if (err instanceof EdgeError || (opts.signal?.aborted && err === opts.signal.reason)) throw err;
    throw new EdgeError('E_BROKER', `the MQTT broker at ${redactUrl(opts.connection.url)}: ${(err as Error).message}`, { cause: err });
  } finally {
    await client.endAsync(true).catch(() => undefined);
  }

  async function exchange(client: MqttClient, protocolVersion: 4 | 5): Promise<AskResult> {
    let streamed = '';
    let nextSeq = 0;
    let settle: { resolve: (r: FinalReply) => void; reject: (e: Error) => void } | undefined;
    const final = new Promise<FinalReply>((resolve, reject) => (settle = { resolve, reject }));
    final.catch(() => undefined);

    client.on('message', (topic, payload, packet) => {
      if (topic !== replyTopic) return;
      const corr = packet.properties?.correlationData;
      if (protocolVersion === 5 && corr !== undefined && corr.toString() !== nonce) return;
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(payload.toString('utf8')) as Record<string, unknown>;
      } catch {
        return;
      }
      if (body.id !== request.id && body.id !== null) return;
      if (body.type === 'chunk') {
        // In order, once each; after a gap the final text (always whole) fills in the rest.
        if (nextSeq >= 0 && body.seq === nextSeq && typeof body.text === 'string') {
          nextSeq++;
          streamed += body.text;
          opts.onChunk?.(body.text);
        } else {
          nextSeq = -1;
        }
      } else if (body.type === 'done' || body.type === 'error') {
        settle?.resolve(body as FinalReply);
      }
    });
    client.on('close', () => {
      settle?.reject(new EdgeError('E_BROKER', `the broker ${redactUrl(opts.connection.url)} closed the connection before the answer came; ask again with --id ${request.id} to get the answer the node stored`));
    });

    const left = () => opts.timeoutMs - (Date.now() - started);
    const grants = await client.subscribeAsync(replyTopic, { qos: 1 });
    if (grants.some((g) => g.qos > 2)) {
      throw new EdgeError('E_BROKER', `the broker refused a subscription to ${replyTopic}: does its ACL let this client read ${prefix}/response/${device}/#?`);
    }
    const payload = JSON.stringify(protocolVersion === 5 ? request : { ...request, reply_to: replyTopic });
    const properties = {
      responseTopic: replyTopic,
      correlationData: Buffer.from(nonce),
      // The broker drops the request if no node took it before we stop waiting.
      messageExpiryInterval: Math.max(1, Math.ceil(left() / 1000)),
      contentType: 'application/json',
    };
    await withDeadline(client.publishAsync(requestTopic, payload, { qos: 1, ...(protocolVersion === 5 ? { properties } : {}) }), left(), () =>
      new EdgeError('E_TIMEOUT', `the broker did not acknowledge the request within ${Math.round(opts.timeoutMs / 1000)} s`),
    );

    const cancel = async () => {
      await withDeadline(client.publishAsync(`${prefix}/cancel/${device}`, JSON.stringify({ id: request.id }), { qos: 1 }), 2000, () => new Error('cancel not acknowledged')).catch(() => undefined);
    };
    const aborted = new Promise<never>((_, reject) => {
      const onAbort = () => reject(opts.signal!.reason instanceof Error ? opts.signal!.reason : new EdgeError('E_TIMEOUT', 'cancelled'));
      if (opts.signal?.aborted) onAbort();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
    });
    aborted.catch(() => undefined);
    try {
      const reply = await withDeadline(Promise.race([final, aborted]), left(), () =>
        new EdgeError(
          'E_TIMEOUT',
          `no answer to request ${request.id} within ${Math.round(opts.timeoutMs / 1000)} s (--timeout); the request was cancelled. ` +
            `Is a node serving ${prefix}/request/+ on this broker? (edgellm serve logs "listening on ${prefix}/request/+")`,
        ),
      );
      return { reply, streamed, protocolVersion };
    } catch (err) {
      if (client.connected) await cancel();
      throw err;
    }
  }
}

function connect(c: DeviceConnection, protocolVersion: 4 | 5, timeoutMs: number): Promise<MqttClient> {
  const options: IClientOptions = {
    protocolVersion,
    clean: true,
    clientId: `edgellm-request-${randomBytes(4).toString('hex')}`,
    reconnectPeriod: 0,
    connectTimeout: Math.max(1000, Math.min(timeoutMs, 10_000)),
    keepalive: 30,
  };
  if (c.username !== undefined) options.username = c.username;
  if (c.password !== undefined) options.password = c.password;
  if (c.ca) options.ca = c.ca;
  if (c.cert) options.cert = c.cert;
  if (c.key) options.key = c.key;
  if (c.rejectUnauthorized !== undefined) options.rejectUnauthorized = c.rejectUnauthorized;
  return new Promise((resolve, reject) => {
    let client: MqttClient;
    try {
      client = mqtt.connect(c.url, options);
    } catch (err) {
      reject(err);
      return;
    }
    const fail = (err: Error) => {
      client.removeAllListeners('connect');
      client.end(true);
      reject(err);
    };
    client.once('connect', () => {
      client.off('error', fail);
      client.off('close', onClose);
      resolve(client);
    });
    client.once('error', fail);
    const onClose = () => fail(new Error('the connection closed before the broker accepted it (connect timeout)'));
    client.once('close', onClose);
  });
}

function brokerError(url: string, err: unknown): EdgeError {
  const shown = redactUrl(url);
  const e = err as Error & { code?: unknown };
  if (e.code === 'ECONNREFUSED') {
    return new EdgeError(
      'E_BROKER',
      `cannot reach the MQTT broker at ${shown}: connection refused. Is \`edgellm serve\` running (without broker.url it runs its own broker on 127.0.0.1:1883)? Otherwise pass the broker with --broker URL`,
      { cause: err },
    );
  }
  const tlsCode = typeof e.code === 'string' ? e.code : '';
  if (/CERTIFICATE_REQUIRED/.test(tlsCode) || /certificate required/.test(e.message)) {
    return new EdgeError('E_BROKER', `the MQTT broker at ${shown} wants a client certificate: pass --cert-file and --key-file`, { cause: err });
  }
  if (/SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|CERT_HAS_EXPIRED|ALTNAME_INVALID/.test(tlsCode)) {
    return new EdgeError('E_BROKER', `cannot reach the MQTT broker at ${shown}: its certificate does not verify (${e.message}); pass the CA that signed it with --ca-file (or --insecure to skip the check)`, { cause: err });
  }
  if (typeof e.code === 'number') {
    return new EdgeError('E_BROKER', `the MQTT broker at ${shown} refused the connection: ${e.message} (check --username / --password-file)`, { cause: err });
  }
  return new EdgeError('E_BROKER', `cannot reach the MQTT broker at ${shown}: ${e.message}`, { cause: err });
}

