// The batching window of the admission queue (batch.window_ms): while nothing runs, arriving jobs are
// held until the window since the first one elapses or batch.max are held, then start together in one
// synchronous pump; deadlines, cancels and shutdown apply to held jobs; window 0 changes nothing.
import t from 'tap';
import { EdgeError } from '../../src/errors.js';
import { RequestQueue, type QueuedJob } from '../../src/scheduler/request-queue.js';
import { queueWaitMs } from '../../src/daemon/request/run-local.js';
import { daemonConfig } from '../helpers/daemon.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Jobs that record when they start: `starts` in order, and for each whether it started in the same
 * synchronous run as the first start of its group (a microtask in between would mean another tick).
 */
function recorder() {
  const log: string[] = [];
  const sameTick: boolean[] = [];
  let pumping = false;
  const job = (key: string, opts: { deadlineAt?: number; gate?: Promise<void> } = {}): QueuedJob => ({
    key,
    priority: 5,
    deadlineAt: opts.deadlineAt ?? null,
    run: async () => {
      log.push(`run ${key}`);
      sameTick.push(pumping);
      if (!pumping) {
        pumping = true;
        queueMicrotask(() => (pumping = false));
      }
      await opts.gate;
    },
    expire: () => log.push(`expire ${key}`),
  });
  return { log, sameTick, job };
}

t.test('held jobs start together when the window since the first one elapses', async (t) => {
  const q = new RequestQueue({ slots: 8, maxWaiting: 10, windowMs: 300 });
  const { log, sameTick, job } = recorder();
  const t0 = Date.now();
  q.submit(job('a'));
  t.ok(q.holding, 'the first arrival opens a window');
  await sleep(40);
  q.submit(job('b'));
  q.submit(job('c'));
  t.same(log, [], 'nothing starts while the window is open');
  t.equal(q.depth, 3);
  while (log.length < 3 && Date.now() - t0 < 2000) await sleep(5);
  t.same(log, ['run a', 'run b', 'run c']);
  t.same(sameTick, [false, true, true], 'the three start in one synchronous pump');
  t.ok(Date.now() - t0 >= 295, `released after the window (${Date.now() - t0} ms), not when b arrived`);
  t.notOk(q.holding);
  await q.idle();
});

t.test('the window closes as soon as batch.max jobs are held', async (t) => {
  const q = new RequestQueue({ slots: 3, maxWaiting: 10, windowMs: 5000 });
  const { log, sameTick, job } = recorder();
  q.submit(job('a'));
  q.submit(job('b'));
  t.same(log, []);
  q.submit(job('c'));
  t.same(log, ['run a', 'run b', 'run c'], 'the third (batch.max) arrival releases all three at once');
  t.same(sameTick, [false, true, true]);
  t.notOk(q.holding);
  await q.idle();
});

t.test('arrivals while jobs run start at once as slots allow, without a window', async (t) => {
  const q = new RequestQueue({ slots: 4, maxWaiting: 10, windowMs: 60 });
  const { log, job } = recorder();
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  q.submit(job('first', { gate }));
  await sleep(90);
  t.same(log, ['run first']);
  q.submit(job('joiner'));
  t.same(log, ['run first', 'run joiner'], 'a request arriving while a batch runs joins it at once');
  t.notOk(q.holding);
  open();
  await q.idle();
  q.submit(job('after'));
  t.ok(q.holding, 'an idle queue opens a new window');
  q.clear();
});

t.test('a held job whose deadline passes is expired at its deadline, and the others still start', async (t) => {
  const q = new RequestQueue({ slots: 8, maxWaiting: 10, windowMs: 400 });
  const { log, job } = recorder();
  const t0 = Date.now();
  q.submit(job('hurry', { deadlineAt: t0 + 30 }));
  q.submit(job('calm'));
  await sleep(120);
  t.same(log, ['expire hurry'], 'expired at its deadline, inside the window');
  t.ok(q.holding, 'the window stays open for the other held job');
  while (log.length < 2 && Date.now() - t0 < 2000) await sleep(5);
  t.same(log, ['expire hurry', 'run calm']);
  await q.idle();
});

t.test('a cancelled held job never starts; when every held job is gone the window closes', async (t) => {
  const q = new RequestQueue({ slots: 8, maxWaiting: 10, windowMs: 400 });
  const { log, job } = recorder();
  q.submit(job('a'));
  q.submit(job('b'));
  t.ok(q.remove('a'), 'a held job can be taken out');
  t.ok(q.holding);
  t.ok(q.remove('b'));
  t.notOk(q.holding, 'no held job left: no window');
  await sleep(200);
  const c0 = Date.now();
  q.submit(job('c'));
  t.ok(q.holding, 'the next arrival opens a window of its own');
  await sleep(300);
  t.same(log, [], 'c waits its full window, not the rest of the old one');
  while (log.length < 1 && Date.now() - c0 < 2000) await sleep(5);
  t.same(log, ['run c']);
  t.ok(Date.now() - c0 >= 395, `c started a full window after it came (${Date.now() - c0} ms)`);
  await q.idle();
});

t.test('shutdown (pause, clear) forgets held jobs and their window', async (t) => {
  const q = new RequestQueue({ slots: 8, maxWaiting: 10, windowMs: 40 });
  const { log, job } = recorder();
  q.submit(job('a', { deadlineAt: Date.now() + 60 }));
  q.submit(job('b'));
  q.pause();
  t.same(q.clear(), ['a', 'b'], 'the held jobs are handed back (they stay queued in the store)');
  t.notOk(q.holding);
  await sleep(100);
  t.same(log, [], 'neither the window nor a deadline fires after the clear');
});

t.test('held jobs count against limits.queue_depth', async (t) => {
  const q = new RequestQueue({ slots: 8, maxWaiting: 1, windowMs: 1000 });
  const { job } = recorder();
  q.submit(job('a'));
  t.throws(() => q.submit(job('b')), new EdgeError('E_QUEUE_FULL', '1 requests are already waiting (limits.queue_depth): retry later'));
  q.submit(job('c'), { force: true });
  t.equal(q.depth, 2);
  q.clear();
});

t.test('window 0 (the default): every job starts as it arrives', async (t) => {
  for (const opts of [{ slots: 4, maxWaiting: 10 }, { slots: 4, maxWaiting: 10, windowMs: 0 }]) {
    const q = new RequestQueue(opts);
    const { log, job } = recorder();
    q.submit(job('a'));
    t.same(log, ['run a'], `started at once (${JSON.stringify(opts)})`);
    t.notOk(q.holding);
    q.submit(job('b'));
    t.same(log, ['run a', 'run b']);
    await q.idle();
  }
});

t.test("the router's queue-wait estimate counts the window an idle node holds a request for", async (t) => {
  const counters = { localRunMs: 1000 } as Parameters<typeof queueWaitMs>[0]['counters'];
  const idle = new RequestQueue({ slots: 4, maxWaiting: 10 });
  t.equal(queueWaitMs({ queue: idle, config: daemonConfig({}), counters }), 0, 'no window: an idle node starts it at once');
  const windowed = new RequestQueue({ slots: 4, maxWaiting: 10, windowMs: 200 });
  const config = daemonConfig({ batch: { max: 4, window_ms: 200 } });
  t.equal(queueWaitMs({ queue: windowed, config, counters }), 200, 'held up to the window');
  const { job } = recorder();
  let open!: () => void;
  windowed.submit(job('a', { gate: new Promise<void>((r) => (open = r)) }));
  windowed.submit(job('b'));
  windowed.submit(job('c'));
  windowed.submit(job('d')); // batch.max held: they start; b, c and d end at once, a runs on
  await sleep(10);
  t.equal(queueWaitMs({ queue: windowed, config, counters }), 0, 'running with a free slot: no wait, no window');
  open();
  await windowed.idle();
});
