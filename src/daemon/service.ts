/**
 * The daemon: starts its parts in order (store -> engine -> scheduler -> transport) and stops them in
 * reverse, draining running generations first. Every part's constructor only wires; work starts in start().
 * Without broker.url the embedded broker starts before everything else and stops after the session.
 * systemd hears READY=1 only once the models are loaded and the broker has accepted the session.
 */
import { maskSecrets, modelFiles, readBrokerPassword, readUpstreamKey, type DaemonConfig } from './config.js';
import type { LocalModel, ModelOpener } from './engine-port.js';
import { createLogger, type Logger } from './log.js';
import { Responder } from './responder.js';
import { SystemdNotifier } from './systemd.js';
import { RequestQueue } from '../scheduler/request-queue.js';
import { Store } from '../store/index.js';
import { DEFAULT_REQUEST_BROKER, EmbeddedBroker, embeddedBrokerFor, EMBEDDED_PROTOCOL_VERSION, isLoopback } from '../transport/mqtt/embedded-broker.js';
import { MqttSession } from '../transport/mqtt/session.js';
import { Topics } from '../transport/mqtt/topics.js';

/** Answered requests are remembered this long, so a late duplicate still gets the same answer. */
const KEEP_ANSWERS_MS = 7 * 24 * 3600 * 1000;

export class Service {
  private store: Store | undefined;
  private readonly models = new Map<string, LocalModel>();
  private responder: Responder | undefined;
  private session: MqttSession | undefined;
  /** Runs when broker.url is unset; stops after the session. */
  private embeddedBroker: EmbeddedBroker | undefined;
  private stopping: Promise<void> | undefined;
  private started = false;
  private pruneTimer: NodeJS.Timeout | undefined;
  readonly log: Logger;

  constructor(
    private readonly config: DaemonConfig,
    private readonly openModel: ModelOpener,
    log?: Logger,
    /** READY/STATUS/WATCHDOG/STOPPING for systemd; a no-op outside it (no NOTIFY_SOCKET). */
    private readonly systemd: SystemdNotifier = new SystemdNotifier(),
  ) {
    this.log = log ?? createLogger(config.log.level);
  }

  async start(): Promise<void> {
    const { config, log, systemd } = this;
    // Pinging from the start: loading a large model takes a while, but it runs off the event loop,
    // so a loop that answers is a daemon that is alive (systemd may arm the watchdog before READY).
    systemd.startWatchdog();
    const files = modelFiles(config);
    const password = readBrokerPassword(config);
    this.noteUpstream();
    // First, so a port clash fails in milliseconds rather than after loading a large model.
    const embedded = embeddedBrokerFor(config.broker, config.fleet.group);
    if (embedded) await this.startEmbeddedBroker(embedded);
    systemd.notifyStatus(`opening the store in ${config.state_dir}`);
    const store = Store.open(config.state_dir, { cacheEntries: config.cache.max_entries });
    this.store = store;
    const prune = () => {
      const pruned = store.requests.prune(Date.now() - KEEP_ANSWERS_MS);
      if (pruned > 0) log.debug(`forgot ${pruned} answered request(s) older than 7 days`);
    };
    prune();
    this.pruneTimer = setInterval(prune, 3600 * 1000);
    this.pruneTimer.unref();

    for (const [name, path] of files) {
      systemd.notifyStatus(`loading model ${name} (${path})`);
      const model = await this.openModel(path);
      this.models.set(name, model);
      log.info(`model ${name}: ${path} (context ${model.contextSize})`);
    }

    const queue = new RequestQueue({ slots: config.batch.max, maxWaiting: config.limits.queue_depth });
    const responder = new Responder({ config, store, queue, models: this.models, log });
    this.responder = responder;

    const topics = new Topics(config.prefix, config.node_id, config.fleet.group);
    const brokerUrl = this.embeddedBroker ? `${this.embeddedBroker.url} (embedded)` : maskSecrets(config).broker.url!;
    const serving = `serving ${[...this.models.keys()].join(', ')} on ${brokerUrl} as ${config.node_id}`;
    const session = new MqttSession({
      config,
      topics,
      outbox: store.outbox,
      sink: responder,
      log,
      password,
      models: [...this.models.keys()],
      metrics: () => responder.stats(),
      ...(this.embeddedBroker ? { broker: { url: this.embeddedBroker.url, protocolVersion: EMBEDDED_PROTOCOL_VERSION } } : {}),
      onConnection: (connected) => {
        if (this.started && !this.stopping) systemd.notifyStatus(connected ? serving : `broker ${brokerUrl} unreachable; retrying`);
      },
    });
    this.session = session;
    responder.attach(session);
    responder.resume();
    this.noteEmbeddedBroker();
    systemd.notifyStatus(`connecting to ${brokerUrl}`);
    await session.start();
    this.started = true;
    log.info(`node ${config.node_id} ready`);
    log.info(`try it: ${this.tryItCommand()}`);
    systemd.notifyReady(serving);
  }

  private async startEmbeddedBroker(address: { host: string; port: number }): Promise<void> {
    this.systemd.notifyStatus(`starting the embedded MQTT broker on ${address.host}:${address.port}`);
    const broker = new EmbeddedBroker(address);
    await broker.start();
    this.embeddedBroker = broker;
  }

  /** Said once the models are loaded, beside the connection line (a model that fails to load is then the only line). */
  private noteEmbeddedBroker(): void {
    const broker = this.embeddedBroker;
    if (!broker) return;
    this.log.info(`no broker.url: running the embedded MQTT broker (MQTT 3.1.1) on ${broker.url}; set broker.url to use the plant's broker`);
    if (!isLoopback(broker.address.host)) {
      this.log.warn(`the embedded broker on ${broker.url} takes any client on the network without a password; for a plant network run a broker with authentication (mosquitto, EMQX) and set broker.url`);
    }
  }

  /** The `edgellm request` command line that reaches this node (the broker's password never in it). */
  private tryItCommand(): string {
    const { config } = this;
    const args = ['npx edgellm request -p "Hello"'];
    const embedded = this.embeddedBroker?.address;
    if (embedded && this.embeddedBroker!.url !== DEFAULT_REQUEST_BROKER) args.push(`--broker ${this.embeddedBroker!.url}`);
    else if (!embedded) args.push(`--broker ${maskSecrets(config).broker.url}`);
    if (!embedded && config.broker.username) args.push(`--username ${config.broker.username} --password-file FILE`);
    const tls = config.broker.tls;
    if (!embedded && tls.ca_file) args.push(`--ca-file ${tls.ca_file}`);
    if (!embedded && tls.cert_file) args.push(`--cert-file CERT --key-file KEY`);
    if (config.prefix !== 'edgellm') args.push(`--prefix ${config.prefix}`);
    return args.join(' ');
  }

  /** Says whether an upstream is configured and has its key; the key itself is never logged. */
  private noteUpstream(): void {
    const { url } = this.config.upstream;
    if (url.trim() === '') return;
    const key = readUpstreamKey(this.config);
    if (key === undefined) {
      this.log.info(`upstream ${url}: no API key (the credential upstream-key is blank or absent), so no upstream; every request runs here`);
    } else {
      this.log.info(`upstream ${url}: API key present; this build has no cloud routing yet, so every request runs here`);
    }
  }

  /** Idempotent; waits up to limits.drain_s for running generations, then leaves the rest for the next start. */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    // STOPPING=1 before draining; watchdog pings go on until the drain is over.
    this.systemd.notifyStopping(`stopping: finishing running requests (up to ${this.config.limits.drain_s} s)`);
    if (this.started) this.log.info('stopping: finishing running requests');
    clearInterval(this.pruneTimer);
    await this.responder?.drain(this.config.limits.drain_s * 1000);
    await this.session?.stop();
    await this.embeddedBroker?.stop();
    for (const model of this.models.values()) await model.close();
    this.models.clear();
    this.store?.close();
    this.systemd.stop();
    if (this.started) this.log.info('stopped');
  }
}
