// A/B variants end to end over a real mosquitto with the fake engine: a model name with two variants
// (two fake models) answers each device with its own variant (the hash's choice), the same one on every
// request, and says which in the done reply, the trace object, the audit record and
// edgellm_variant_requests_total; a request's variant field overrides, an unknown one is
// E_UNKNOWN_VARIANT; `edgellm audit --by variant` and `npm run ab-report` summarize the store it filled.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RequestAudit } from '../../src/policy/audit.js';
import { chooseVariant } from '../../src/policy/variants.js';
import type { SqliteAuditLog } from '../../src/store/audit.js';
import { Broker, freePort, mosquittoFor } from '../helpers/broker.js';
import { daemonConfig, startDaemon } from '../helpers/daemon.js';
import { Device } from '../helpers/device.js';
import { parsePrometheus, valueOf } from '../helpers/prometheus.js';
import { assertCliBuilt, cli, root } from '../fixtures/paths.js';

const bin = mosquittoFor('the A/B variant tests');

const VARIANTS = [
  { model: 'small', weight: 1 },
  { model: 'large', weight: 1 },
];
const DEVICES = Array.from({ length: 12 }, (_, i) => `line-${i}`);

if (bin) {
  t.test('variants: sticky per device, overridable, reported in replies, audit, metrics and ab-report', async (t) => {
    assertCliBuilt();
    const broker = await Broker.start(bin);
    const work = mkdtempSync(join(tmpdir(), 'edgellm-ab-'));
    t.teardown(() => {
      broker.destroy();
      rmSync(work, { recursive: true, force: true });
    });
    const port = await freePort();
    const openaiPort = await freePort();
    const stateDir = join(work, 'state');
    const config = daemonConfig({
      broker: { url: broker.url },
      prefix: 'ab',
      node_id: 'ab1',
      state_dir: stateDir,
      http: { port },
      openai: { port: openaiPort },
      model: '/models/small.gguf',
      models: ['/models/large.gguf'],
      variants: { chat: VARIANTS },
    });
    const daemon = await startDaemon(config);
    t.teardown(() => daemon.service.stop());
    const device = await Device.connect(broker.url, 'client-ab', ['ab/response/#']);
    t.teardown(() => device.close());
    const ask = async (dev: string, id: string, extra: object = {}) => {
      await device.publish(`ab/request/${dev}`, { id, prompt: `hello from ${dev}`, model: 'chat', ...extra });
      return (await device.final(id)).body;
    };

    const expected = new Map(DEVICES.map((d) => [d, chooseVariant(VARIANTS, d, 'chat').model]));
    t.same(new Set(expected.values()), new Set(['small', 'large']), 'the devices of this test land on both variants');
    for (const round of [1, 2]) {
      for (const d of DEVICES) {
        const body = await ask(d, `${d}-${round}`, round === 2 ? { trace: true, seed: 1 } : {});
        t.equal(body.type, 'done');
        t.equal(body.variant, expected.get(d), `${d} round ${round}: its own variant`);
        t.equal(body.model, expected.get(d), 'the variant is the model that answered');
        t.match(String(body.text), /^you said: hello from/);
        if (round === 2) t.match(body.trace, { variant: expected.get(d) }, 'the trace object names the variant');
      }
    }

    const other = (v: string | undefined) => (v === 'small' ? 'large' : 'small');
    const d0 = DEVICES[0]!;
    const forced = await ask(d0, 'forced', { variant: other(expected.get(d0)) });
    t.equal(forced.variant, other(expected.get(d0)), 'a request naming its variant gets that one');
    const unknown = await ask(d0, 'unknown', { variant: 'medium' });
    t.match(unknown, { type: 'error', error: { code: 'E_UNKNOWN_VARIANT', message: /"medium" is not a variant of "chat"; its variants are small, large/ } });
    const plain = await ask(d0, 'plain', { model: 'small', variant: 'large' });
    t.match(plain, { type: 'error', error: { code: 'E_UNKNOWN_VARIANT', message: /only for a model name with A\/B variants \(chat\), not "small"/ } });
    const none = await ask(d0, 'none', { model: 'small' });
    t.equal(none.variant, undefined, 'a model without variants: no variant field');

    const audit = (daemon.service.audit as SqliteAuditLog).query({ type: 'request' }).map((e) => e.record as RequestAudit);
    for (const d of DEVICES) {
      t.match(audit.find((r) => r.id === `${d}-1`), { variant: expected.get(d), variant_of: 'chat', model: expected.get(d), outcome: 'ok', cached: false }, `${d}: audited with its variant`);
    }
    t.ok(audit.filter((r) => r.variant !== undefined && r.outcome === 'ok').every((r) => typeof r.total_ms === 'number' && typeof r.tokens_per_s === 'number'), 'answered records keep total_ms and tokens_per_s');

    const metrics = parsePrometheus(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
    const servedBy = (v: string) => [...expected.values()].filter((x) => x === v).length * 2 + (forced.variant === v ? 1 : 0);
    for (const v of ['small', 'large']) {
      t.equal(valueOf(metrics, 'edgellm_variant_requests_total', { model: 'chat', variant: v, outcome: 'done' }), servedBy(v), `edgellm_variant_requests_total{variant="${v}"}`);
    }

    // The OpenAI endpoint: the body's user (else the x-edgellm-device header) is the stickiness key.
    const chat = async (body: object, headers: Record<string, string> = {}) => {
      const res = await fetch(`http://127.0.0.1:${openaiPort}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ model: 'chat', messages: [{ role: 'user', content: 'hi there' }], ...body }),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    for (const d of DEVICES.slice(0, 6)) {
      t.match(await chat({ user: d }), { status: 200, body: { model: expected.get(d), variant: expected.get(d) } }, `openai user ${d}: its variant`);
      t.match(await chat({}, { 'x-edgellm-device': d }), { status: 200, body: { variant: expected.get(d) } }, `openai x-edgellm-device ${d}: its variant`);
    }
    const streamed = await fetch(`http://127.0.0.1:${openaiPort}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'chat', user: d0, stream: true, messages: [{ role: 'user', content: 'a b c' }] }),
    });
    const chunks = (await streamed.text()).split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)) as Record<string, unknown>);
    t.ok(chunks.length >= 3 && chunks.every((c) => c.variant === expected.get(d0)), 'openai stream: every chunk names the variant');
    t.match(await chat({ user: d0, variant: other(expected.get(d0)) }), { status: 200, body: { variant: other(expected.get(d0)) } }, 'openai: variant overrides');
    t.match(await chat({ user: d0, variant: 'medium' }), { status: 400, body: { error: { code: 'variant_not_found', param: 'variant', message: /"medium" is not a variant of "chat"/ } } });
    const apiAudit = (daemon.service.audit as SqliteAuditLog).query({ type: 'request', device: 'openai-api' }).map((e) => e.record as RequestAudit);
    t.equal(apiAudit.filter((r) => r.variant_of === 'chat' && r.outcome === 'ok').length, 14, 'the API\'s answered requests are audited with their variant');

    // The reports read the store from another process while the daemon runs (WAL).
    const report = spawnSync(process.execPath, [join(root, 'scripts', 'ab-report.mjs'), '--state-dir', stateDir, '--json'], { encoding: 'utf8' });
    t.equal(report.status, 0, report.stderr);
    const rows = report.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const all = (daemon.service.audit as SqliteAuditLog).query({ type: 'request' }).map((e) => e.record as RequestAudit);
    for (const v of ['small', 'large']) {
      const mine = all.filter((r) => r.variant === v);
      const failed = mine.filter((r) => r.outcome === 'error').length;
      t.ok(mine.length > servedBy(v), `${v}: MQTT and OpenAI requests`);
      t.match(rows.find((r) => r.variant === v), { name: 'chat', requests: mine.length, error_rate: failed / mine.length, cache_hit_rate: 0 }, `ab-report: ${v}`);
      t.ok(Number(rows.find((r) => r.variant === v)?.p95_latency_ms) >= 0, 'a p95 latency');
    }
    const table = spawnSync(process.execPath, [join(root, 'scripts', 'ab-report.mjs'), '--state-dir', stateDir], { encoding: 'utf8' });
    t.match(table.stdout, /^MODEL\s+VARIANT\s+REQUESTS\s+TOKENS\/S\s+P95 MS\s+ERRORS\s+CACHE HITS\nchat\s+(small|large)\s+\d+/);
    const byVariant = spawnSync(process.execPath, [cli, 'audit', '--state-dir', stateDir, '--by', 'variant', '--json'], { encoding: 'utf8' });
    t.equal(byVariant.status, 0, byVariant.stderr);
    t.same(byVariant.stdout, report.stdout, 'edgellm audit --by variant --json prints the same summary');
    const missing = spawnSync(process.execPath, [join(root, 'scripts', 'ab-report.mjs'), '--state-dir', join(work, 'nowhere')], { encoding: 'utf8' });
    t.equal(missing.status, 2);
    t.match(missing.stderr, /edgellm\.db does not exist: is .* the daemon's state_dir\?/);
  });
}
