// The daemon applies audit.retention_days when it starts (and hourly): older audit records and
// expired grants go, the rest stays. Runs a real Service with a fake engine over mosquitto.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../../src/store/index.js';
import { Broker, mosquittoFor } from '../helpers/broker.js';
import { daemonConfig, startDaemon } from '../helpers/daemon.js';

const DAY = 86_400_000;
const bin = mosquittoFor('the audit retention test');

if (bin) {
  t.test('on start the daemon prunes audit records older than audit.retention_days and expired grants', async (t) => {
    const broker = await Broker.start(bin);
    t.teardown(() => broker.destroy());
    const dir = mkdtempSync(join(tmpdir(), 'edgellm-retention-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const stateDir = join(dir, 'state');

    const now = Date.now();
    const before = Store.open(stateDir, { cacheEntries: 10 });
    for (const [id, age] of [['old', 40 * DAY], ['recent', 20 * DAY]] as const) {
      before.audit.write({ type: 'request', time: now - age, device: 'd', id, allowed: true, outcome: 'ok' });
    }
    before.grants.add({ device: 'd', role: 'local', granted_at: now - 2 * DAY, expires_at: now - DAY });
    before.grants.add({ device: 'd', role: 'cloud', granted_at: now, expires_at: now + DAY });
    before.close();

    const daemon = await startDaemon(daemonConfig({ broker: { url: broker.url }, prefix: 'ret', node_id: 'ret1', state_dir: stateDir, audit: { retention_days: 30 } }));
    t.teardown(() => daemon.service.stop());

    const store = Store.open(stateDir, { cacheEntries: 10, create: false });
    t.teardown(() => store.close());
    t.same(store.audit.query({ type: 'request' }).map((e) => (e.record as { id?: string }).id), ['recent']);
    t.same(store.grants.list(0).map((g) => g.role), ['cloud'], 'the expired grant is gone, the active one stays');
    t.match(daemon.logs.join(''), /pruned 1 audit record\(s\) older than 30 days and 1 expired grant\(s\)/);
  });
}
