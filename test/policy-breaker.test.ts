// The circuit breaker in front of the upstream (src/policy/breaker.ts), on an injected clock.
import t from 'tap';
import { EdgeError } from '../src/errors.js';
import { CircuitBreaker } from '../src/policy/breaker.js';

function setup(opts = { failure_threshold: 3, window_ms: 10_000, cooldown_ms: 5_000 }) {
  let now = 1_000_000;
  const breaker = new CircuitBreaker(opts, () => now);
  return { breaker, advance: (ms: number) => (now += ms), now: () => now };
}

const fail = (b: CircuitBreaker, msg = 'boom') => b.acquire()!.failure(new EdgeError('E_UPSTREAM', msg));

t.test('N consecutive failures within the window open the circuit', async (t) => {
  const { breaker } = setup();
  fail(breaker);
  fail(breaker);
  t.equal(breaker.state(), 'closed');
  t.equal(breaker.status().consecutive_failures, 2);
  fail(breaker);
  t.equal(breaker.state(), 'open');
  t.equal(breaker.admits(), false);
  t.equal(breaker.acquire(), undefined, 'an open circuit refuses calls');
  t.match(breaker.status(), { state: 'open', opened_total: 1, failures_total: 3, rejected_total: 1, last_failure: { code: 'E_UPSTREAM', message: 'boom' } });
});

t.test('a success resets the count; failures older than the window do not count', async (t) => {
  const { breaker, advance } = setup();
  fail(breaker);
  fail(breaker);
  breaker.acquire()!.success();
  fail(breaker);
  fail(breaker);
  t.equal(breaker.state(), 'closed', 'the success in between reset it');
  advance(10_001);
  fail(breaker);
  t.equal(breaker.state(), 'closed', 'the two earlier failures left the window');
  t.equal(breaker.status().consecutive_failures, 1);
});

t.test('after the cool-down exactly one half-open trial is let through; success closes', async (t) => {
  const { breaker, advance, now } = setup();
  for (let i = 0; i < 3; i++) fail(breaker);
  t.equal(breaker.status().retry_at, now() + 5_000);
  advance(4_999);
  t.equal(breaker.state(), 'open');
  advance(1);
  t.equal(breaker.state(), 'half_open');
  t.equal(breaker.admits(), true);
  const trial = breaker.acquire()!;
  t.equal(trial.trial, true);
  t.equal(breaker.admits(), false, 'the trial slot is taken');
  t.equal(breaker.acquire(), undefined);
  t.equal(breaker.status().trial_in_flight, true);
  trial.success();
  t.equal(breaker.state(), 'closed');
  t.equal(breaker.acquire()!.trial, false);
});

t.test('a failed trial re-opens the circuit for a new cool-down', async (t) => {
  const { breaker, advance } = setup();
  for (let i = 0; i < 3; i++) fail(breaker);
  advance(5_000);
  breaker.acquire()!.failure(new Error('still down'));
  t.equal(breaker.state(), 'open');
  t.equal(breaker.status().opened_total, 2);
  advance(4_000);
  t.equal(breaker.state(), 'open');
  advance(1_000);
  t.equal(breaker.state(), 'half_open');
});

t.test('a cancelled trial frees the slot for the next caller; reports count once', async (t) => {
  const { breaker, advance } = setup();
  for (let i = 0; i < 3; i++) fail(breaker);
  advance(5_000);
  const trial = breaker.acquire()!;
  trial.cancel();
  trial.failure(); // ignored: the ticket was already reported
  t.equal(breaker.state(), 'half_open');
  const next = breaker.acquire()!;
  t.equal(next.trial, true);
  next.success();
  next.failure();
  t.equal(breaker.state(), 'closed');
  t.match(breaker.status(), { successes_total: 1, failures_total: 3 });
});

t.test('failures of calls started before the circuit opened do not extend it', async (t) => {
  const { breaker } = setup({ failure_threshold: 2, window_ms: 10_000, cooldown_ms: 5_000 });
  const a = breaker.acquire()!;
  const b = breaker.acquire()!;
  const c = breaker.acquire()!;
  a.failure();
  b.failure();
  t.equal(breaker.status().opened_total, 1);
  c.failure();
  t.equal(breaker.status().opened_total, 1);
  t.equal(breaker.status().failures_total, 3);
});

t.test('bad options are E_CONFIG', async (t) => {
  t.throws(() => new CircuitBreaker({ failure_threshold: 0 }), { code: 'E_CONFIG' });
  t.throws(() => new CircuitBreaker({ cooldown_ms: -1 }), { code: 'E_CONFIG' });
  t.equal(new CircuitBreaker().state(), 'closed');
});
