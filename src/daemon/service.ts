/**
 * The daemon: starts its parts in order (store -> engine -> policy -> scheduler -> transport) and stops them in
 * reverse, draining running generations first. Every part's constructor only wires; work starts in start().
 * Without broker.url the embedded broker starts before everything else and stops after the session.
 * systemd hears READY=1 only once the models are loaded and the broker has accepted the session; the
 * optional HTTP endpoint (http.port) answers /healthz and /metrics from before the models load until
 * the end of stop.
 */
import { checkBrokerCredentials, checkPolicyReferences, maskSecrets, modelFiles, readBrokerPassword, readUpstreamSecret, type DaemonConfig } from '../config.js';
import type { LocalModel, ModelOpener } from './engine-port.js';
import { LocalChat } from './local-chat.js';
import { DaemonPolicy } from './hybrid-policy.js';
import type { GrantStore } from '../policy/access.js';
import type { AuditSink } from '../policy/audit.js';
import { breakerStateValue, type BreakerState } from '../policy/breaker.js';
import { redactUrl, type Secret } from '../secret.js';
import { createLogger, type Logger } from '../log.js';
import { DaemonMetrics } from './metrics.js';
import { OpsHttpServer } from './ops-http.js';
import { Readiness } from './readiness.js';
import { Responder } from './request/responder.js';
import { SystemdNotifier } from './systemd.js';
import { OpenAIServer, readOpenAIKey } from '../transport/http/openai-server.js';
import { RequestQueue } from '../scheduler/request-queue.js';
import { Store } from '../store/index.js';
import { DEFAULT_REQUEST_BROKER, EmbeddedBroker, embeddedBrokerFor, EMBEDDED_PROTOCOL_VERSION, isLoopback } from '../transport/mqtt/embedded-broker.js';
import { MqttSession } from '../transport/mqtt/session.js';
import { Topics } from '../protocol/topics.js';

/** Answered requests are remembered this long, so a late duplicate still gets the same answer. */
const KEEP_ANSWERS_MS = 7 * 24 * 3600 * 1000;

/** The audit log's retention and expired grants; a failure is logged, never thrown out of the hourly timer. */
function pruneAudit(store: Store, retentionDays: number, log: Logger): void {
  try {
    const audited = store.audit.prune(retentionDays);
    const expired = store.grants.forgetExpired(Date.now());
    if (audited + expired > 0) {
      log.debug(`pruned ${audited} audit record(s) older than ${retentionDays} days and ${expired} expired grant(s)`, { audit_pruned: audited, grants_expired: expired });
    }
  } catch (err) {
    log.error(`audit log: pruning failed: ${(err as Error).message}`);
  }
}

export class Service {
  private store: Store | undefined;
  private readonly models = new Map<string, LocalModel>();
  private responder: Responder | undefined;
  private session: MqttSession | undefined;
  /** Runs when broker.url is unset; stops after the session. */
  private embeddedBroker: EmbeddedBroker | undefined;
  /** The OpenAI-compatible API (openai.port), when configured. */
  private chat: LocalChat | undefined;
  private openai: OpenAIServer | undefined;
  private stopping: Promise<void> | undefined;
  private started = false;
  private pruneTimer: NodeJS.Timeout | undefined;
  private metrics: DaemonMetrics | undefined;
  private http: OpsHttpServer | undefined;
  /** What /healthz reports. */
  readonly readiness: Readiness;
  private boundHttpPort: number | undefined;
  private breakerTimer: NodeJS.Timeout | undefined;
  private lastBreaker: BreakerState | 'none' = 'none';
  /** Access control, routing, the upstream and its breaker; set once start() has loaded the models. */
  policy: DaemonPolicy | undefined;
  /** Temporary grants (`edgellm grant`) and the audit log; set by start(). */
  grants: GrantStore | undefined;
  audit: AuditSink | undefined;
  readonly log: Logger;

  constructor(
    private readonly config: DaemonConfig,
    private readonly openModel: ModelOpener,
    log?: Logger,
    /** READY/STATUS/WATCHDOG/STOPPING for systemd; a no-op outside it (no NOTIFY_SOCKET). */
    private readonly systemd: SystemdNotifier = new SystemdNotifier(),
  ) {
    this.log = log ?? createLogger(config.log.level, undefined, { base: { node: config.node_id } });
    this.readiness = new Readiness(config.node_id);
  }

  /** The port /healthz and /metrics listen on, once started (undefined when http.port is 0). */
  get httpPort(): number | undefined {
    return this.boundHttpPort;
  }

  async start(): Promise<void> {
    const { config, log, systemd } = this;
    // Pinging from the start: loading a large model takes a while, but it runs off the event loop,
    // so a loop that answers is a daemon that is alive (systemd may arm the watchdog before READY).
    systemd.startWatchdog();
    const files = modelFiles(config);
    checkBrokerCredentials(config); // loadConfig checked these too; a config built in code has not been
    checkPolicyReferences(config);
    const password = readBrokerPassword(config);
    log.protect?.(password);
    this.readiness.expect(files.keys());
    // Before the store and the models: /healthz says 503 while they load, and a taken port fails fast.
    if (config.http.port > 0) await this.startHttp();
    // Likewise the embedded broker (no broker.url): a port clash fails in milliseconds, not after a model load.
    const embedded = embeddedBrokerFor(config.broker, config.fleet.group);
    if (embedded) await this.startEmbeddedBroker(embedded);
    const openaiKey = readOpenAIKey(config.openai.api_key_file);
    const apiKey = this.noteUpstream();
    systemd.notifyStatus(`opening the store in ${config.state_dir}`);
    const store = Store.open(config.state_dir, {
      cacheEntries: config.cache.max_entries,
      auditPrompts: config.audit.store_prompts,
      onAuditError: (err, r) => log.error(`audit log: could not record a ${r.type} record: ${err.message}`, { audit_type: r.type }),
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
      if (this.stopping) {
        // A signal came while it loaded: the shutdown has already closed the models it knew of.
        await model.close();
        return;
      }
      this.models.set(name, model);
      this.readiness.loaded(name);
      this.metrics?.model(name, model.contextSize);
      log.info(`model ${name}: ${path} (context ${model.contextSize})`);
    }

    // Both in SQLite: `edgellm grant`/`revoke` from another process count on the next request.
    const grants: GrantStore = store.grants;
    const audit: AuditSink = store.audit;
    this.grants = grants;
    this.audit = audit;
    const policy = new DaemonPolicy({ config, models: this.models, grants, audit, apiKey });
    this.policy = policy;
    this.lastBreaker = policy.breakerState();
    policy.auditConfigLoad(config, 'serve');
    if (config.upstream.url.trim() !== '') {
      this.metrics?.liveGauge('edgellm_upstream_breaker_state', 'upstream circuit breaker: 0 closed, 1 half-open, 2 open', () => {
        const state = policy.breakerState();
        return state === 'none' ? 0 : breakerStateValue(state);
      });
    }

    const queue = new RequestQueue({ slots: config.batch.max, maxWaiting: config.limits.queue_depth });
    const responder = new Responder({ config, store, queue, models: this.models, log, policy, onBreakerReport: () => this.watchBreaker(), ...(this.metrics ? { observer: this.metrics } : {}) });
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
      status: () => ({ upstream: statusOfUpstream(policy) }),
      ...(this.embeddedBroker ? { broker: { url: this.embeddedBroker.url, protocolVersion: EMBEDDED_PROTOCOL_VERSION } } : {}),
      onConnection: (connected) => {
        this.readiness.connection(connected);
        if (this.started && !this.stopping) systemd.notifyStatus(connected ? serving : `broker ${brokerUrl} unreachable; retrying`);
      },
    });
    if (this.stopping) return;
    this.session = session;
    responder.attach(session);
    responder.resume();
    if (config.openai.port !== undefined) {
      this.chat = new LocalChat({ config, queue, models: this.models, log, audit, ...(this.metrics ? { observer: this.metrics } : {}) });
      this.openai = new OpenAIServer({ host: config.openai.host, port: config.openai.port, apiKey: openaiKey, maxBodyBytes: config.openai.max_body_bytes, backend: this.chat, log });
      await this.openai.start();
      // A stop that began while it was binding has already passed the point where it closes it.
      if (this.stopping) {
        await this.openai.close();
        return;
      }
    }
    this.noteEmbeddedBroker();
    systemd.notifyStatus(`connecting to ${brokerUrl}`);
    await session.start();
    this.readiness.serving();
    // An open circuit turns half-open with time alone: look every second, republish on a change.
    this.breakerTimer = setInterval(() => this.watchBreaker(), 1000);
    this.breakerTimer.unref();
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
    const args = ['npx edgellm request -p Hello'];
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

  private async startHttp(): Promise<void> {
    const { config, readiness } = this;
    const metrics = new DaemonMetrics({
      node: config.node_id,
      live: () => this.responder?.stats(),
      connected: () => readiness.connected,
      ready: () => readiness.report().status === 'ok',
    });
    this.metrics = metrics;
    const http = new OpsHttpServer({ readiness, metrics, log: this.log });
    this.boundHttpPort = await http.listen(config.http.port, config.http.host);
    this.http = http;
    // A stop that began while it was binding has already passed the point where it closes it.
    if (this.stopping) await http.close();
  }

  /** Reads the upstream's key and says whether there is an upstream and a key; the key itself is never logged. */
  private noteUpstream(): Secret | undefined {
    const { url, model } = this.config.upstream;
    if (url.trim() === '') return undefined; // every request is answered here
    const key = readUpstreamSecret(this.config);
    this.log.protect?.(key?.reveal());
    const where = `upstream ${redactUrl(url)} (model ${model})`;
    if (key === undefined) this.log.info(`${where}: no API key (upstream.api_key_file or the credential upstream-key), so requests go without one`);
    else this.log.info(`${where}: API key present`);
    return key;
  }

  /** Republishes the status when the breaker changed state, and says so in the log. */
  private watchBreaker(): void {
    const policy = this.policy;
    if (!policy) return;
    const state = policy.breakerState();
    if (state === this.lastBreaker) return;
    const was = this.lastBreaker;
    this.lastBreaker = state;
    const st = policy.upstreamStatus();
    if (state === 'open') {
      const retry = st?.breaker.retry_at ? new Date(st.breaker.retry_at).toISOString() : 'later';
      const last = st?.breaker.last_failure?.message ?? 'repeated failures';
      this.log.warn(`upstream circuit open (last failure: ${last}): requests are answered here until a trial at ${retry}`);
    } else if (state === 'closed' && was !== 'closed') {
      this.log.info('upstream circuit closed: the upstream answers again');
    } else {
      this.log.info(`upstream circuit ${state}`);
    }
    this.session?.republishStatus();
  }

  /** Idempotent; waits up to limits.drain_s for running generations, then leaves the rest for the next start. */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    // STOPPING=1 before draining; watchdog pings go on until the drain is over.
    this.readiness.stopping();
    this.systemd.notifyStopping(`stopping: finishing running requests (up to ${this.config.limits.drain_s} s)`);
    if (this.started) this.log.info('stopping: finishing running requests');
    else this.log.info('stopping before the start finished: nothing was accepted yet');
    clearInterval(this.pruneTimer);
    clearInterval(this.breakerTimer);
    this.openai?.stopAccepting();
    const drainMs = this.config.limits.drain_s * 1000;
    // The API's waiting requests are refused before the responder's drain forgets what waits in the queue.
    await Promise.all([this.chat?.drain(drainMs), this.responder?.drain(drainMs)]);
    await this.openai?.close();
    await this.session?.stop();
    await this.embeddedBroker?.stop();
    // Until here /healthz said 503 "stopping" and /metrics showed the drain; the store closes next.
    await this.http?.close();
    for (const model of this.models.values()) await model.close();
    this.models.clear();
    this.store?.close();
    this.systemd.stop();
    if (this.started) this.log.info('stopped');
  }
}

/** The upstream as the retained status shows it: where, which model, the breaker; null without one. */
function statusOfUpstream(policy: DaemonPolicy): object | null {
  const u = policy.upstreamStatus();
  if (!u) return null;
  const b = u.breaker;
  return { url: u.url, model: u.model, breaker: b.state, ...(b.retry_at !== null ? { retry_at: new Date(b.retry_at).toISOString() } : {}) };
}
