// The admission queue: slots, order (priority, deadline, arrival), bounds and expiry while waiting.
import t from 'tap';
import { EdgeError } from '../../src/errors.js';
import { RequestQueue, type QueuedJob } from '../../src/scheduler/request-queue.js';

function job(key: string, log: string[], opts: { priority?: number; deadlineAt?: number | null; gate?: Promise<void> } = {}): QueuedJob {
  return {
    key,
    priority: opts.priority ?? 5,
    deadlineAt: opts.deadlineAt ?? null,
    run: async () => {
      log.push(`run ${key}`);
      await opts.gate;
    },
    expire: () => log.push(`expire ${key}`),
  };
}

function gate() {
  let open!: () => void;
  const p = new Promise<void>((r) => (open = r));
  return { p, open };
}

t.test('waiting jobs start by priority, then deadline, then arrival', async (t) => {
  const q = new RequestQueue({ slots: 1, maxWaiting: 10 });
  const log: string[] = [];
  const g = gate();
  q.submit(job('first', log, { gate: g.p }));
  const far = Date.now() + 60_000;
  q.submit(job('low', log, { priority: 1 }));
  q.submit(job('plain-a', log));
  q.submit(job('late-deadline', log, { deadlineAt: far + 1000 }));
  q.submit(job('soon-deadline', log, { deadlineAt: far }));
  q.submit(job('plain-b', log));
  q.submit(job('urgent', log, { priority: 9 }));
  t.equal(q.depth, 6);
  t.equal(q.running, 1);
  g.open();
  await q.idle();
  t.same(log, ['run first', 'run urgent', 'run soon-deadline', 'run late-deadline', 'run plain-a', 'run plain-b', 'run low']);
});

t.test('beyond maxWaiting a submit is E_QUEUE_FULL, unless forced', async (t) => {
  const q = new RequestQueue({ slots: 1, maxWaiting: 1 });
  const log: string[] = [];
  const g = gate();
  q.submit(job('a', log, { gate: g.p }));
  q.submit(job('b', log));
  t.throws(() => q.submit(job('c', log)), new EdgeError('E_QUEUE_FULL', '1 requests are already waiting (limits.queue_depth): retry later'));
  q.submit(job('d', log), { force: true });
  t.equal(q.depth, 2);
  g.open();
  await q.idle();
  t.same(log, ['run a', 'run b', 'run d']);
});

t.test('a waiting job whose deadline passes is expired at once, without running', async (t) => {
  const q = new RequestQueue({ slots: 1, maxWaiting: 5 });
  const log: string[] = [];
  const g = gate();
  q.submit(job('busy', log, { gate: g.p }));
  q.submit(job('hurry', log, { deadlineAt: Date.now() + 30 }));
  await new Promise((r) => setTimeout(r, 80));
  t.same(log, ['run busy', 'expire hurry']);
  g.open();
  await q.idle();
  t.equal(q.depth, 0);
});

t.test('remove takes a waiting job out; pause holds jobs; clear forgets them', async (t) => {
  const q = new RequestQueue({ slots: 2, maxWaiting: 5 });
  const log: string[] = [];
  q.pause();
  q.submit(job('x', log));
  q.submit(job('y', log));
  q.submit(job('x', log)); // same key: ignored
  t.equal(q.depth, 2);
  t.ok(q.has('x'));
  t.ok(q.remove('x'));
  t.notOk(q.remove('x'));
  t.same(q.clear(), ['y']);
  await q.idle();
  t.same(log, []);
});

t.test('a job that throws gives its slot back', async (t) => {
  const q = new RequestQueue({ slots: 1, maxWaiting: 5 });
  const log: string[] = [];
  q.submit({ ...job('bad', log), run: async () => Promise.reject(new Error('boom')) });
  q.submit(job('next', log));
  await q.idle();
  await new Promise((r) => setImmediate(r));
  t.same(log, ['run next']);
});
