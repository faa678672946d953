/**
 * The daemon's Prometheus metrics, on a registry of its own (never prom-client's global one, so two
 * daemons in one process, as in the tests, do not share counters). Counters and histograms move with
 * the responder's RequestObserver events; gauges are read when /metrics is scraped. Names and units
 * follow Prometheus' conventions: seconds, `_total` for counters. docs/operations.md lists them all.
 * A scraper that asks for OpenMetrics gets it, with each request's trace id as an exemplar on the
 * latency buckets and the token counter (exemplars.ts).
 */
import { createRequire } from 'node:module';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { ExemplarBook, OPENMETRICS_CONTENT_TYPE } from './exemplars.js';
import { DriftWindows, DRIFT_WINDOW, type RawLogprobSums } from './drift.js';
import type { FinishedRequest, RequestObserver } from './request-observer.js';

/** What the gauges read at scrape time (Responder.stats() and the session's state). */
export interface LiveState {
  queue_depth: number;
  running: number;
  outbox: number;
  tokens_per_s: number;
}

/** Buckets in seconds. A Pi decodes a few to a few tens of tokens/s, so answers take seconds to minutes. */
const QUEUE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const TTFT_BUCKETS = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60];
const TOTAL_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300];

const require = createRequire(import.meta.url);
const { version } = require('../../package.json') as { version: string };

export class DaemonMetrics implements RequestObserver {
  readonly registry = new Registry();
  private readonly requests: Counter<'outcome' | 'route' | 'code'>;
  private readonly tokens: Counter<'route'>;
  private readonly cacheHits: Counter;
  private readonly cacheMisses: Counter;
  private readonly queueWait: Histogram<'route'>;
  private readonly ttft: Histogram<'route'>;
  private readonly total: Histogram<'route' | 'outcome'>;
  private readonly modelInfo: Gauge<'model' | 'context_size'>;
  private readonly exemplars = new ExemplarBook();
  private readonly drift = new DriftWindows();
  private readonly driftSamples: Counter<'model'>;
  private readonly variants: Counter<'model' | 'variant' | 'outcome'>;

  constructor(opts: {
    node: string;
    /** Undefined until the responder exists (models still loading): the gauges then read 0. */
    live: () => LiveState | undefined;
    connected: () => boolean;
    ready: () => boolean;
    /** prom-client's process_* and nodejs_* metrics (CPU, memory, event-loop lag, GC), read at scrape time. */
    processMetrics?: boolean;
  }) {
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'edgellm_requests_total',
      help: 'requests answered, by outcome (done, cached, cancelled, error), route (local, cloud, none = refused before routing) and error code',
      labelNames: ['outcome', 'route', 'code'],
      registers,
    });
    this.variants = new Counter({
      name: 'edgellm_variant_requests_total',
      help: 'requests for a model name with A/B variants, by that name (model), the variant that served it and outcome (done, cached, cancelled, error)',
      labelNames: ['model', 'variant', 'outcome'],
      registers,
    });
    this.tokens = new Counter({ name: 'edgellm_generated_tokens_total', help: 'tokens generated (answers from the cache not counted)', labelNames: ['route'], registers });
    this.cacheHits = new Counter({ name: 'edgellm_cache_hits_total', help: 'deterministic requests answered from the cache', registers });
    this.cacheMisses = new Counter({ name: 'edgellm_cache_misses_total', help: 'deterministic requests not in the cache (then generated)', registers });
    this.queueWait = new Histogram({
      name: 'edgellm_queue_wait_seconds',
      help: 'from arrival until a slot took the request',
      labelNames: ['route'],
      buckets: QUEUE_BUCKETS,
      registers,
    });
    this.ttft = new Histogram({
      name: 'edgellm_time_to_first_token_seconds',
      help: 'from arrival until the first text (queue wait and prompt included)',
      labelNames: ['route'],
      buckets: TTFT_BUCKETS,
      registers,
    });
    this.total = new Histogram({
      name: 'edgellm_request_duration_seconds',
      help: 'from arrival until the final reply, by route and outcome',
      labelNames: ['route', 'outcome'],
      buckets: TOTAL_BUCKETS,
      registers,
    });
    this.modelInfo = new Gauge({ name: 'edgellm_model_info', help: 'a model this node serves, with its context size in tokens (always 1)', labelNames: ['model', 'context_size'], registers });
    new Gauge({ name: 'edgellm_info', help: 'this edgellm (always 1)', labelNames: ['version', 'node'], registers }).set({ version, node: opts.node }, 1);

    const live = <K extends keyof LiveState>(k: K) => () => opts.live()?.[k] ?? 0;
    this.liveGauge('edgellm_queue_depth', 'requests waiting for a slot', live('queue_depth'));
    this.liveGauge('edgellm_running', 'generations running now (at most batch.max)', live('running'));
    this.liveGauge('edgellm_outbox_size', 'final replies stored and not yet acknowledged by the broker', live('outbox'));
    this.liveGauge('edgellm_decode_tokens_per_second', 'mean decode speed of the last 20 local generations, tokens/s (0 before the first)', live('tokens_per_s'));
    this.liveGauge('edgellm_mqtt_connected', '1 while the broker connection is up', () => (opts.connected() ? 1 : 0));
    this.liveGauge('edgellm_ready', '1 while /healthz answers 200', () => (opts.ready() ? 1 : 0));
    this.driftSamples = new Counter({
      name: 'edgellm_drift_samples_total',
      help: 'local requests whose prompt and answer were scored under the model for the drift gauges (metrics.drift_sample of them)',
      labelNames: ['model'],
      registers,
    });
    const drift = this.drift;
    for (const part of ['prompt', 'completion'] as const) {
      new Gauge({
        name: `edgellm_${part}_logprob_mean`,
        help:
          `mean natural-log probability per ${part} token under the model (no sampling penalties or temperature), ` +
          `over its last ${DRIFT_WINDOW} sampled requests; falling = ${part === 'prompt' ? 'inputs the model finds more surprising' : 'less confident answers'}`,
        labelNames: ['model'],
        registers,
        collect() {
          for (const [model, mean] of drift.means(part)) this.set({ model }, mean);
        },
      });
    }
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** A gauge read when scraped: one line per new one (say, edgellm_upstream_breaker_state). */
  liveGauge(name: string, help: string, read: () => number): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }

  model(name: string, contextSize: number): void {
    this.modelInfo.set({ model: name, context_size: String(contextSize) }, 1);
  }

  onFinished(r: FinishedRequest): void {
    this.requests.inc(r.outcome === 'error' ? { outcome: r.outcome, route: r.route, code: r.code ?? 'E_UNKNOWN' } : { outcome: r.outcome, route: r.route });
    if (r.ab) this.variants.inc({ model: r.ab.name, variant: r.ab.variant, outcome: r.outcome });
    const trace = r.trace_id;
    const route = { route: r.route };
    if (r.outcome !== 'cached' && r.completion_tokens > 0) {
      this.tokens.inc(route, r.completion_tokens);
      if (trace) this.exemplars.counter('edgellm_generated_tokens_total', route, r.completion_tokens, trace);
    }
    const observe = (h: Histogram<'route'> | Histogram<'route' | 'outcome'>, name: string, buckets: readonly number[], labels: Record<string, string>, ms: number) => {
      h.observe(labels, seconds(ms));
      if (trace) this.exemplars.histogram(name, buckets, labels, seconds(ms), trace);
    };
    if (r.queue_ms !== undefined) observe(this.queueWait, 'edgellm_queue_wait_seconds', QUEUE_BUCKETS, route, r.queue_ms);
    if (r.ttft_ms !== undefined) observe(this.ttft, 'edgellm_time_to_first_token_seconds', TTFT_BUCKETS, route, r.ttft_ms);
    observe(this.total, 'edgellm_request_duration_seconds', TOTAL_BUCKETS, { route: r.route, outcome: r.outcome }, r.total_ms);
  }

  onCacheLookup(hit: boolean): void {
    (hit ? this.cacheHits : this.cacheMisses).inc();
  }

  onDriftSample(model: string, m: RawLogprobSums): void {
    this.drift.add(model, m);
    this.driftSamples.inc({ model });
  }

  /** Prometheus text (0.0.4), or OpenMetrics 1.0 with exemplars. */
  contentType(openMetrics = false): string {
    return openMetrics ? OPENMETRICS_CONTENT_TYPE : this.registry.contentType;
  }

  /** The exposition text for one scrape, in the format contentType(openMetrics) names. */
  async text(openMetrics = false): Promise<string> {
    const text = await this.registry.metrics();
    return openMetrics ? this.exemplars.openMetricsText(text) : text;
  }
}

const seconds = (ms: number) => Math.max(0, ms) / 1000;
