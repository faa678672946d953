/**
 * The daemon: starts its parts in order (store -> engine -> scheduler -> transport) and stops them in
 * reverse, draining running generations first. Every part's constructor only wires; work starts in start().
 * systemd hears READY=1 only once the models are loaded and the broker has accepted the session.
 */
import { maskSecrets, modelFiles, readBrokerPassword, readUpstreamKey, type DaemonConfig } from './config.js';
import type { LocalModel, ModelOpener } from './engine-port.js';
import { createLogger, type Logger } from './log.js';
import { Responder } from './responder.js';
import { SystemdNotifier } from './systemd.js';
import { RequestQueue } from '../scheduler/request-queue.js';
import { Store } from '../store/index.js';
import { MqttSession } from '../transport/mqtt/session.js';
import { Topics } from '../transport/mqtt/topics.js';

/** Answered requests are remembered this long, so a late duplicate still gets the same answer. */
const KEEP_ANSWERS_MS = 7 * 24 * 3600 * 1000;

/** The audit log's retention and expired grants; a failure is logged, never thrown out of the hourly timer. */
function pruneAudit(store: Store, retentionDays: number, log: Logger): void {
  try {
    const audited = store.audit.prune(retentionDays);
    const expired = store.grants.forgetExpired(Date.now());
    if (audited + expired > 0) log.debug(`pruned ${audited} audit record(s) older than ${retentionDays} days and ${expired} expired grant(s)`);
  } catch (err) {
    log.error(`audit log: pruning failed: ${(err as Error).message}`);
  }
}

export class Service {
  private store: Store | undefined;
  private readonly models = new Map<string, LocalModel>();
  private responder: Responder | undefined;
  private session: MqttSession | undefined;
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
    systemd.notifyStatus(`opening the store in ${config.state_dir}`);
    const store = Store.open(config.state_dir, {
      cacheEntries: config.cache.max_entries,
      auditPrompts: config.audit.store_prompts,
      onAuditError: (err, r) => log.error(`audit log: could not record a ${r.type} record: ${err.message}`),
    });
    this.store = store;
    const prune = () => {
      const pruned = store.requests.prune(Date.now() - KEEP_ANSWERS_MS);
      if (pruned > 0) log.debug(`forgot ${pruned} answered request(s) older than 7 days`);
      pruneAudit(store, config.audit.retention_days, log);
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
    const brokerUrl = maskSecrets(config).broker.url;
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
      onConnection: (connected) => {
        if (this.started && !this.stopping) systemd.notifyStatus(connected ? serving : `broker ${brokerUrl} unreachable; retrying`);
      },
    });
    this.session = session;
    responder.attach(session);
    responder.resume();
    systemd.notifyStatus(`connecting to ${brokerUrl}`);
    await session.start();
    this.started = true;
    log.info(`node ${config.node_id} ready`);
    systemd.notifyReady(serving);
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
    for (const model of this.models.values()) await model.close();
    this.models.clear();
    this.store?.close();
    this.systemd.stop();
    if (this.started) this.log.info('stopped');
  }
}
