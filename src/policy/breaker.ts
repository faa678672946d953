/**
 * A circuit breaker in front of the upstream.
 *
 *   closed    --failure_threshold consecutive failures within window_ms-->  open
 *   open      --cooldown_ms elapsed-->                                       half_open
 *   half_open --one trial call: success--> closed;  failure--> open (a new cool-down)
 *
 * A caller asks for a ticket before each call and reports how it went; only the first report of a
 * ticket counts. In half_open exactly one ticket (the trial) is out at a time; a trial that is
 * cancelled (the caller gave up, not the upstream) frees the slot for the next caller.
 * The clock is injectable so tests step time instead of sleeping.
 */
import { EdgeError } from '../errors.js';

export type BreakerState = 'closed' | 'open' | 'half_open';

export interface BreakerOptions {
  /** Consecutive failures (errors or timeouts) that open the circuit. */
  failure_threshold: number;
  /** Failures older than this no longer count towards the threshold (ms). */
  window_ms: number;
  /** How long the circuit stays open before one trial is let through (ms). */
  cooldown_ms: number;
}

export const BREAKER_DEFAULTS: Readonly<BreakerOptions> = Object.freeze({
  failure_threshold: 3,
  window_ms: 60_000,
  cooldown_ms: 30_000,
});

/** What /metrics and the status topic show. */
export interface BreakerStatus {
  state: BreakerState;
  /** Failures counting towards the threshold now. */
  consecutive_failures: number;
  /** When an open circuit lets a trial through (ms since the epoch); null unless open. */
  retry_at: number | null;
  /** Whether the half-open trial is in flight. */
  trial_in_flight: boolean;
  successes_total: number;
  failures_total: number;
  /** Times the circuit opened. */
  opened_total: number;
  /** Calls refused because the circuit was open (or its trial taken). */
  rejected_total: number;
  /** The last failure's code and reason (no secrets: callers pass EdgeError messages). */
  last_failure: { at: number; code: string; message: string } | null;
}

export interface BreakerTicket {
  /** True for the half-open trial. */
  readonly trial: boolean;
  success(): void;
  failure(err?: unknown): void;
  /** The caller gave up (cancelled): counts neither way. */
  cancel(): void;
}

/** A breaker state as a number, for a Prometheus gauge: 0 closed, 1 half_open, 2 open. */
export function breakerStateValue(state: BreakerState): 0 | 1 | 2 {
  return state === 'closed' ? 0 : state === 'half_open' ? 1 : 2;
}

export class CircuitBreaker {
  readonly options: Readonly<BreakerOptions>;
  private readonly now: () => number;
  private current: 'closed' | 'open' | 'half_open' = 'closed';
  private failures: number[] = [];
  private openedAt = 0;
  private trialOut = false;
  private counts = { successes_total: 0, failures_total: 0, opened_total: 0, rejected_total: 0 };
  private lastFailure: BreakerStatus['last_failure'] = null;

  constructor(options: Partial<BreakerOptions> = {}, now: () => number = Date.now) {
    const o = { ...BREAKER_DEFAULTS, ...options };
    if (!Number.isInteger(o.failure_threshold) || o.failure_threshold < 1) {
      throw new EdgeError('E_CONFIG', `breaker failure_threshold must be a whole number >= 1, got ${o.failure_threshold}`);
    }
    for (const k of ['window_ms', 'cooldown_ms'] as const) {
      if (!Number.isFinite(o[k]) || o[k] < 0) throw new EdgeError('E_CONFIG', `breaker ${k} must be a number of milliseconds >= 0, got ${o[k]}`);
    }
    this.options = Object.freeze(o);
    this.now = now;
  }

  /** The state at this moment (an open circuit whose cool-down has passed is half_open). */
  state(): BreakerState {
    if (this.current === 'open' && this.now() - this.openedAt >= this.options.cooldown_ms) this.current = 'half_open';
    return this.current;
  }

  /** Would acquire() give a ticket now? (Does not take one.) */
  admits(): boolean {
    const s = this.state();
    return s === 'closed' || (s === 'half_open' && !this.trialOut);
  }

  /** A ticket for one call, or undefined when the circuit refuses it (counted in rejected_total). */
  acquire(): BreakerTicket | undefined {
    const s = this.state();
    if (s === 'open' || (s === 'half_open' && this.trialOut)) {
      this.counts.rejected_total++;
      return undefined;
    }
    const trial = s === 'half_open';
    if (trial) this.trialOut = true;
    let reported = false;
    const report = (f: () => void): void => {
      if (reported) return;
      reported = true;
      f();
    };
    return {
      trial,
      success: () => report(() => this.onSuccess(trial)),
      failure: (err?: unknown) => report(() => this.onFailure(trial, err)),
      cancel: () =>
        report(() => {
          if (trial) this.trialOut = false;
        }),
    };
  }

  status(): BreakerStatus {
    const state = this.state();
    return {
      state,
      consecutive_failures: this.liveFailures().length,
      retry_at: state === 'open' ? this.openedAt + this.options.cooldown_ms : null,
      trial_in_flight: state === 'half_open' && this.trialOut,
      ...this.counts,
      last_failure: this.lastFailure ? { ...this.lastFailure } : null,
    };
  }

  private liveFailures(): number[] {
    const since = this.now() - this.options.window_ms;
    this.failures = this.failures.filter((t) => t >= since);
    return this.failures;
  }

  private onSuccess(trial: boolean): void {
    this.counts.successes_total++;
    this.failures = [];
    if (trial) this.trialOut = false;
    if (trial || this.current !== 'open') this.current = 'closed';
  }

  private onFailure(trial: boolean, err: unknown): void {
    const at = this.now();
    this.counts.failures_total++;
    this.lastFailure = {
      at,
      code: err instanceof EdgeError ? err.code : 'E_UPSTREAM',
      message: err instanceof Error ? err.message : 'the upstream call failed',
    };
    if (trial) {
      this.trialOut = false;
      this.open(at);
      return;
    }
    if (this.current !== 'closed') return; // a straggler from before the circuit opened
    this.liveFailures().push(at);
    if (this.failures.length >= this.options.failure_threshold) this.open(at);
  }

  private open(at: number): void {
    this.current = 'open';
    this.openedAt = at;
    this.failures = [];
    this.counts.opened_total++;
  }
}
