// The batching window through the daemon's request path (MQTT, admit, run-local, the queue) with the
// fake engine: requests arriving within batch.window_ms of an idle node start together (their
// generate() calls back to back, every decode step of theirs a batch of all of them); with the
// default window 0 each starts as it arrives.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Broker, mosquittoFor } from '../helpers/broker.js';
import { daemonConfig, startDaemon } from '../helpers/daemon.js';
import { Device } from '../helpers/device.js';
import type { TapTest } from '../fixtures/paths.js';

const bin = mosquittoFor('the batching window daemon tests');

/** Requests sent GAP_MS apart: four of them span 150 ms, well inside a 600 ms window. */
const GAP_MS = 50;
/** The fake engine's pace, one word per WORD_MS: slow enough that the daemon's own work per token (ms) does not shift one generation's steps past another's. */
const WORD_MS = 30;

if (bin) {
  let broker: Broker;
  let n = 0;
  const work = mkdtempSync(join(tmpdir(), 'edgellm-window-'));
  t.before(async () => {
    broker = await Broker.start(bin);
  });
  t.teardown(() => {
    broker.destroy();
    rmSync(work, { recursive: true, force: true });
  });

  /** A daemon with `batch`, whose model records when each generate() call came (ms since the first request was sent). */
  async function burst(t: TapTest, batch: Record<string, unknown>, count: number) {
    n++;
    const prefix = `bw${n}`;
    const config = daemonConfig({ broker: { url: broker.url }, prefix, node_id: `window${n}`, state_dir: join(work, `s${n}`), batch, cache: { enabled: false } });
    const daemon = await startDaemon(config, WORD_MS);
    t.teardown(() => daemon.service.stop());
    const device = await Device.connect(broker.url, `client-${prefix}`, [`${prefix}/response/#`]);
    t.teardown(() => device.close());
    const model = daemon.models[0]!;
    const starts: number[] = [];
    // Whether each call came in the same synchronous run as the first of its group (no microtask between).
    const sameTick: boolean[] = [];
    let pumping = false;
    const generate = model.generate.bind(model);
    let t0 = 0;
    model.generate = (p) => {
      starts.push(Date.now() - t0);
      sameTick.push(pumping);
      if (!pumping) {
        pumping = true;
        queueMicrotask(() => (pumping = false));
      }
      return generate(p);
    };
    t0 = Date.now();
    for (let i = 0; i < count; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, GAP_MS));
      await device.publish(`${prefix}/request/dev`, { id: `r${i}`, prompt: `one two three four five six ${i}`, seed: 1, trace: true });
    }
    const finals = await Promise.all(Array.from({ length: count }, (_, i) => device.final(`r${i}`, 10_000)));
    return { starts, sameTick, finals };
  }

  t.test('requests arriving within the window start together, in one batch', async (t) => {
    const { starts, sameTick, finals } = await burst(t, { max: 8, window_ms: 600 }, 4);
    t.equal(starts.length, 4, 'every request ran');
    t.same(sameTick, [false, true, true, true], `the four generations started in one synchronous run (at ${starts.join(', ')} ms)`);
    t.ok(Math.min(...starts) >= 3 * GAP_MS, `none started before the last one arrived (first start at ${Math.min(...starts)} ms)`);
    for (const f of finals) {
      t.equal(f.body.type, 'done', `${f.body.id} is answered`);
      const sizes = (f.body.trace as { batch_sizes?: { size: number; steps: number }[] } | undefined)?.batch_sizes;
      // Nine words each; the fake counts a generation out as soon as its last word is taken, so the others'
      // last step may see fewer: every step but the last is a batch of all four.
      const withAll = sizes?.find((s) => s.size === 4)?.steps ?? 0;
      t.ok(withAll >= 8, `${f.body.id} decoded alongside all four (${JSON.stringify(sizes)})`);
    }
  });

  t.test('batch.max held requests are released without waiting out the window', async (t) => {
    const { starts, sameTick } = await burst(t, { max: 3, window_ms: 5000 }, 3);
    t.same(sameTick, [false, true, true], `started together (at ${starts.join(', ')} ms)`);
    t.ok(Math.max(...starts) < 2000, `released when the third arrived, not after 5 s (at ${Math.max(...starts)} ms)`);
  });

  t.test('window 0 (the default): each request starts as it arrives', async (t) => {
    const { starts, sameTick } = await burst(t, { max: 8 }, 4);
    t.equal(starts.length, 4);
    t.same(sameTick, [false, false, false, false], 'each started on its own');
    t.ok(Math.max(...starts) - Math.min(...starts) >= 2 * GAP_MS, `the starts follow the arrivals (at ${starts.join(', ')} ms)`);
  });
}
