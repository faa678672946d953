/**
 * Whether this node can take requests now, as /healthz reports it. Ready means: every configured model
 * is loaded, the MQTT session is subscribed and its connection is up, and the node is not stopping.
 * It goes back to not ready when the broker connection drops (requests cannot reach the node; it
 * reconnects by itself) and for good once shutdown begins (it is draining). Liveness, whether the
 * process answers at all, is systemd's watchdog; this is readiness.
 */

/** `connecting` until the first CONNACK, `lost` after a connection dropped and until the next one. */
export type BrokerState = 'connecting' | 'connected' | 'lost';

export interface HealthReport {
  status: 'ok' | 'unavailable';
  node: string;
  models: 'loading' | 'loaded';
  broker: BrokerState;
  stopping: boolean;
  /** What keeps the node from being ready, in words; empty when it is. */
  missing: string[];
}

export class Readiness {
  private readonly pending = new Set<string>();
  private expected = false;
  private broker: BrokerState = 'connecting';
  private subscribed = false;
  private isStopping = false;

  constructor(private readonly node: string) {}

  /** The models the node will load, by name, before the first is opened. */
  expect(models: Iterable<string>): void {
    for (const m of models) this.pending.add(m);
    this.expected = true;
  }

  loaded(model: string): void {
    this.pending.delete(model);
  }

  connection(connected: boolean): void {
    this.broker = connected ? 'connected' : this.broker === 'connecting' ? 'connecting' : 'lost';
  }

  /** The session holds its subscriptions: requests now reach the node. */
  serving(): void {
    this.subscribed = true;
  }

  stopping(): void {
    this.isStopping = true;
  }

  get connected(): boolean {
    return this.broker === 'connected';
  }

  report(): HealthReport {
    const missing: string[] = [];
    const loading = !this.expected || this.pending.size > 0;
    if (loading) missing.push(this.pending.size > 0 ? `models not loaded yet: ${[...this.pending].join(', ')}` : 'models not loaded yet');
    if (this.broker === 'connecting') missing.push('broker not connected yet');
    else if (this.broker === 'lost') missing.push('broker connection lost; reconnecting');
    else if (!this.subscribed) missing.push('subscribing to the request topics');
    if (this.isStopping) missing.push('stopping: finishing running requests, taking no new ones');
    return {
      status: missing.length === 0 ? 'ok' : 'unavailable',
      node: this.node,
      models: loading ? 'loading' : 'loaded',
      broker: this.broker,
      stopping: this.isStopping,
      missing,
    };
  }
}
