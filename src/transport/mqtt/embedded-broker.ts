/**
 * The MQTT broker edgellm runs itself when no broker.url is configured (aedes, in this process), so
 * `edgellm serve` works on a machine with nothing else installed. It listens on broker.embedded.host
 * (loopback by default) and stops with the daemon; its sessions and queued messages live in memory.
 *
 * aedes 1.x speaks MQTT 3.1.1 (and 3.1), not MQTT 5: clients of it (the daemon, `edgellm request`)
 * connect with 3.1.1 and name their reply topic with the request's `reply_to` field instead of a
 * Response Topic. A plant's broker (mosquitto, EMQX, ...) is set with broker.url instead.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { Aedes } from 'aedes';
import { EdgeError } from '../../errors.js';
import { listen, urlHost } from '../../net.js';

/** The MQTT protocol level of MQTT 3.1.1, the newest aedes speaks. */
export const EMBEDDED_PROTOCOL_VERSION = 4;

/** The embedded broker at its default address: where `edgellm request` goes without --broker. */
export const DEFAULT_REQUEST_BROKER = 'mqtt://127.0.0.1:1883';

export interface EmbeddedBrokerAddress {
  host: string;
  port: number;
}

/** mqtt://host:port a client on this machine reaches the embedded broker at (a wildcard host via loopback). */
export function embeddedBrokerUrl({ host, port }: EmbeddedBrokerAddress): string {
  const reach = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `mqtt://${urlHost(reach)}:${port}`;
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export class EmbeddedBroker {
  private aedes: Aedes | undefined;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(readonly address: EmbeddedBrokerAddress) {}

  get url(): string {
    return embeddedBrokerUrl(this.address);
  }

  /** Listens; a taken port is E_PORT_IN_USE, a port or host it may not use E_CONFIG, each saying what to do instead. */
  async start(): Promise<void> {
    const { host, port } = this.address;
    const aedes = await Aedes.createBroker();
    const server = createServer((socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      aedes.handle(socket);
    });
    try {
      await listen(server, port, host);
    } catch (err) {
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      throw listenError(this.address, err as NodeJS.ErrnoException);
    }
    this.aedes = aedes;
    this.server = server;
  }

  /** Disconnects every client and stops listening. Idempotent. */
  async stop(): Promise<void> {
    const { aedes, server } = this;
    this.aedes = undefined;
    this.server = undefined;
    if (!aedes || !server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }
}

function listenError(address: EmbeddedBrokerAddress, err: NodeJS.ErrnoException): EdgeError {
  const where = `${address.host}:${address.port}`;
  const instead =
    `set broker.url to the broker already there (--broker ${embeddedBrokerUrl(address)}), ` +
    'or broker.embedded.port (EDGELLM_BROKER_EMBEDDED_PORT) to a free port';
  if (err.code === 'EADDRINUSE') {
    return new EdgeError('E_PORT_IN_USE', `cannot start the embedded MQTT broker: port ${address.port} on ${address.host} is already in use (another broker such as mosquitto, or another edgellm?): ${instead}`, { cause: err });
  }
  if (err.code === 'EACCES') {
    return new EdgeError('E_CONFIG', `cannot start the embedded MQTT broker on ${where}: not allowed to listen there (ports below 1024 need privileges); set broker.embedded.port to a port above 1023`, { cause: err });
  }
  if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') {
    return new EdgeError('E_CONFIG', `cannot start the embedded MQTT broker on ${where}: ${address.host} is not an address of this machine; set broker.embedded.host (default 127.0.0.1)`, { cause: err });
  }
  return new EdgeError('E_BROKER', `cannot start the embedded MQTT broker on ${where}: ${err.message}`, { cause: err });
}

/** The broker.* keys that only mean something for a broker at broker.url. */
interface BrokerSettings {
  url?: string | undefined;
  username?: string | undefined;
  password_file?: string | undefined;
  tls: { ca_file?: string | undefined; cert_file?: string | undefined; key_file?: string | undefined };
  embedded: EmbeddedBrokerAddress;
}

/**
 * Where the embedded broker should listen, or undefined when broker.url names a broker. Credentials,
 * TLS files or a fleet group without broker.url mean a broker.url was forgotten: E_CONFIG, not a
 * silent embedded broker that no other node can reach.
 */
export function embeddedBrokerFor(broker: BrokerSettings, fleetGroup?: string): EmbeddedBrokerAddress | undefined {
  if (broker.url !== undefined) return undefined;
  const orphans = [
    broker.username !== undefined ? 'broker.username' : '',
    broker.password_file !== undefined ? 'broker.password_file' : '',
    broker.tls.ca_file !== undefined ? 'broker.tls.ca_file' : '',
    broker.tls.cert_file !== undefined ? 'broker.tls.cert_file' : '',
    broker.tls.key_file !== undefined ? 'broker.tls.key_file' : '',
  ].filter((k) => k !== '');
  if (orphans.length > 0) {
    throw new EdgeError(
      'E_CONFIG',
      `${orphans.join(', ')} ${orphans.length > 1 ? 'are' : 'is'} set but broker.url is not: set broker.url (or --broker) to the broker they are for; without broker.url edgellm runs its own broker on ${embeddedBrokerUrl(broker.embedded)}, which takes no credentials`,
    );
  }
  if (fleetGroup !== undefined) {
    throw new EdgeError(
      'E_CONFIG',
      `fleet.group "${fleetGroup}" needs a broker the whole fleet shares: set broker.url (or --broker); without it edgellm runs its own broker, which has no shared subscriptions`,
    );
  }
  return broker.embedded;
}
