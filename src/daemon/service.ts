/**
 * The daemon: an ordered list of parts (parts.ts), started in order and stopped in reverse once each
 * has drained what it owns: the store, the ops HTTP endpoint (/healthz and /metrics, answering from
 * before the models load), the embedded broker (no broker.url), the models, the policy, the queue and
 * the MQTT request path (src/daemon/request/), the OpenAI endpoint, and last the MQTT session, whose
 * connection is what lets devices in. The constructor only wires; work starts in start(). systemd hears
 * READY=1 only once the models are loaded and the broker has accepted the session.
 */
import { checkBrokerCredentials, checkPolicyReferences, maskSecrets, modelFiles, readBrokerPassword, readUpstreamSecret, type DaemonConfig } from '../config.js';
import type { LocalModel, ModelOpener } from './engine-port.js';
import { LocalChat } from './local-chat.js';
import { mediaLimits } from './request/intake.js';
import { UpstreamChat } from './upstream-chat.js';
import { DaemonPolicy } from './hybrid-policy.js';
import type { GrantStore } from '../policy/access.js';
import type { AuditSink } from '../policy/audit.js';
import { breakerStateValue, type BreakerState } from '../policy/breaker.js';
import { redactUrl, type Secret } from '../secret.js';
import { createLogger, resolveLogFormat, type Logger } from '../log.js';
import { DaemonMetrics } from './metrics.js';
import { OpsHttpServer } from './ops-http.js';
import { Readiness } from './readiness.js';
import { PartList, type Part } from './parts.js';
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
  private readonly parts = new PartList();
  private store: Store | undefined;
  private readonly models = new Map<string, LocalModel>();
  private queue: RequestQueue | undefined;
  private responder: Responder | undefined;
  private session: MqttSession | undefined;
  /** Runs when broker.url is unset; stops after the session. */
  private embeddedBroker: EmbeddedBroker | undefined;
  private stopping: Promise<void> | undefined;
  private started = false;
  private metrics: DaemonMetrics | undefined;
  /** What /healthz reports. */
  readonly readiness: Readiness;
  private boundHttpPort: number | undefined;
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
    this.log = log ?? createLogger(config.log.level, undefined, { base: { node: config.node_id }, format: resolveLogFormat(config.log.format) });
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
    const openaiKey = readOpenAIKey(config.openai.api_key_file);
    const apiKey = this.noteUpstream();
    const embedded = embeddedBrokerFor(config.broker, config.fleet.group);
    const parts: Part[] = [
      this.storePart(),
      // Before the models: /healthz says 503 while they load, and a taken port fails in milliseconds.
      ...(config.http.port > 0 ? [this.opsHttpPart()] : []),
      ...(embedded ? [this.embeddedBrokerPart(embedded)] : []),
      this.modelsPart(files),
      this.policyPart(apiKey),
      this.requestsPart(password),
      ...(config.openai.port !== undefined ? [this.openaiPart(openaiKey)] : []),
      this.sessionPart(),
    ];
    if (!(await this.parts.start(parts))) return; // a stop came while a part started
    this.started = true;
    log.info(`node ${config.node_id} ready`);
    log.info(`try it: ${this.tryItCommand()}`);
    systemd.notifyReady(this.servingLine());
  }

  private storePart(): Part {
    const { config, log } = this;
    let pruneTimer: NodeJS.Timeout | undefined;
    return {
      name: 'store',
      start: async () => {
        this.systemd.notifyStatus(`opening the store in ${config.state_dir}`);
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
        pruneTimer = setInterval(prune, 3600 * 1000);
        pruneTimer.unref();
      },
      stop: async () => {
        clearInterval(pruneTimer);
        this.store?.close();
      },
    };
  }

  private opsHttpPart(): Part {
    const { config, readiness } = this;
    let http: OpsHttpServer | undefined;
    return {
      name: 'ops HTTP',
      start: async () => {
        const metrics = new DaemonMetrics({
          node: config.node_id,
          live: () => this.responder?.stats(),
          connected: () => readiness.connected,
          ready: () => readiness.report().status === 'ok',
        });
        this.metrics = metrics;
        http = new OpsHttpServer({ readiness, metrics, log: this.log });
        this.boundHttpPort = await http.listen(config.http.port, config.http.host);
      },
      // Until here /healthz said 503 "stopping" and /metrics showed the drain; the store closes next.
      stop: async () => http?.close(),
    };
  }

  private embeddedBrokerPart(address: { host: string; port: number }): Part {
    return {
      name: 'embedded broker',
      start: async () => {
        this.systemd.notifyStatus(`starting the embedded MQTT broker on ${address.host}:${address.port}`);
        const broker = new EmbeddedBroker(address);
        await broker.start();
        this.embeddedBroker = broker;
      },
      stop: async () => this.embeddedBroker?.stop(),
    };
  }

  /** Loads the models one by one; a stop that comes meanwhile ends the start after the model loading then. */
  private modelsPart(files: Map<string, string>): Part {
    return {
      name: 'models',
      start: async () => {
        for (const [name, path] of files) {
          this.systemd.notifyStatus(`loading model ${name} (${path})`);
          const model = await this.openModel(path);
          this.models.set(name, model);
          if (this.parts.stopping) return;
          this.readiness.loaded(name);
          this.metrics?.model(name, model.contextSize);
          this.log.info(`model ${name}: ${path} (context ${model.contextSize})`);
        }
      },
      stop: async () => {
        for (const model of this.models.values()) await model.close();
        this.models.clear();
      },
    };
  }

  private policyPart(apiKey: Secret | undefined): Part {
    const { config } = this;
    return {
      name: 'policy',
      start: async () => {
        // Both in SQLite: `edgellm grant`/`revoke` from another process count on the next request.
        const store = this.store!;
        this.grants = store.grants;
        this.audit = store.audit;
        const policy = new DaemonPolicy({ config, models: this.models, grants: store.grants, audit: store.audit, apiKey });
        this.policy = policy;
        this.lastBreaker = policy.breakerState();
        policy.auditConfigLoad(config, 'serve');
        if (config.upstream.url.trim() !== '') {
          this.metrics?.liveGauge('edgellm_upstream_breaker_state', 'upstream circuit breaker: 0 closed, 1 half-open, 2 open', () => {
            const state = policy.breakerState();
            return state === 'none' ? 0 : breakerStateValue(state);
          });
        }
      },
      stop: async () => undefined,
    };
  }

  /**
   * The queue and the MQTT request path; the session it replies through is built here too (not yet
   * connected), so the requests accepted before the last stop are taken back before anything new arrives.
   */
  private requestsPart(password: string | undefined): Part {
    const { config, log } = this;
    return {
      name: 'requests',
      start: async () => {
        const store = this.store!;
        const policy = this.policy!;
        this.queue = new RequestQueue({ slots: config.batch.max, maxWaiting: config.limits.queue_depth, windowMs: config.batch.window_ms });
        const responder = new Responder({ config, store, queue: this.queue, models: this.models, log, policy, onBreakerReport: () => this.watchBreaker(), ...(this.metrics ? { observer: this.metrics } : {}) });
        this.responder = responder;
        const session = new MqttSession({
          config,
          topics: new Topics(config.prefix, config.node_id, config.fleet.group),
          outbox: store.outbox,
          packets: store.packets,
          sink: responder,
          log,
          password,
          models: [...this.models.keys()],
          metrics: () => responder.stats(),
          status: () => ({ upstream: statusOfUpstream(policy) }),
          ...(this.embeddedBroker ? { broker: { url: this.embeddedBroker.url, protocolVersion: EMBEDDED_PROTOCOL_VERSION } } : {}),
          onConnection: (connected) => {
            this.readiness.connection(connected);
            if (this.started && !this.stopping) this.systemd.notifyStatus(connected ? this.servingLine() : `broker ${this.brokerUrl()} unreachable; retrying`);
          },
        });
        this.session = session;
        responder.attach(session);
        responder.resume();
      },
      drain: async () => this.responder?.drain(this.config.limits.drain_s * 1000),
      stop: async () => undefined,
    };
  }

  private openaiPart(apiKey: Secret | undefined): Part {
    const { config, log } = this;
    let chat: LocalChat | undefined;
    let upstreamChat: UpstreamChat | undefined;
    let openai: OpenAIServer | undefined;
    return {
      name: 'OpenAI endpoint',
      start: async () => {
        const observer = this.metrics ? { observer: this.metrics } : {};
        upstreamChat = new UpstreamChat({ policy: this.policy!, models: this.models, log, onBreakerReport: () => this.watchBreaker(), ...observer });
        chat = new LocalChat({ config, queue: this.queue!, models: this.models, log, audit: this.audit!, multimodal: upstreamChat, ...observer });
        const { max_body_bytes: maxBodyBytes, host, port } = config.openai;
        openai = new OpenAIServer({ host, port: port!, apiKey, maxBodyBytes, media: mediaLimits(config), backend: chat, log });
        await openai.start();
      },
      // Newer than the requests part, so it drains first: the API's waiting requests are refused
      // before the responder's drain forgets what waits in the queue.
      drain: async () => {
        openai?.stopAccepting();
        await Promise.all([chat?.drain(this.config.limits.drain_s * 1000), upstreamChat?.drain(this.config.limits.drain_s * 1000)]);
      },
      stop: async () => openai?.close(),
    };
  }

  /** The connection that lets devices in: last to start, first to stop once the drain has published what it could. */
  private sessionPart(): Part {
    let breakerTimer: NodeJS.Timeout | undefined;
    return {
      name: 'MQTT session',
      start: async () => {
        this.noteEmbeddedBroker();
        this.systemd.notifyStatus(`connecting to ${this.brokerUrl()}`);
        await this.session!.start();
        this.readiness.serving();
        // An open circuit turns half-open with time alone: look every second, republish on a change.
        breakerTimer = setInterval(() => this.watchBreaker(), 1000);
        breakerTimer.unref();
      },
      stop: async () => {
        clearInterval(breakerTimer);
        await this.session?.stop();
      },
    };
  }

  private brokerUrl(): string {
    return this.embeddedBroker ? `${this.embeddedBroker.url} (embedded)` : maskSecrets(this.config).broker.url!;
  }

  private servingLine(): string {
    return `serving ${[...this.models.keys()].join(', ')} on ${this.brokerUrl()} as ${this.config.node_id}`;
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

  /**
   * The `edgellm request` command line that reaches this node (the broker's password never in it),
   * with the command this daemon was run as: the bundle's launcher names itself in EDGELLM_COMMAND
   * (/opt/edgellm/current/bin/edgellm on a Pi, where there is no npx); a checkout runs `npx edgellm`.
   */
  private tryItCommand(): string {
    const { config } = this;
    const args = [`${process.env.EDGELLM_COMMAND ?? 'npx edgellm'} request -p Hello`];
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
    await this.parts.stop((part, err) => this.log.error(`stopping the ${part.name}: ${err.message}`));
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
