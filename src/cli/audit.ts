/**
 * `edgellm audit`: reads the daemon's audit log (requests allowed and denied, grants, revokes,
 * config loads). A table by default; --json prints each record as one JSON object per line, with
 * its position in the log as "seq".
 */
import type { Command } from 'commander';
import type { AuditRecord } from '../policy/audit.js';
import { summarizeVariants, type VariantSummary } from '../policy/variants.js';
import type { AuditEntry } from '../store/index.js';
import { EdgeError } from '../errors.js';
import { parsePositiveInt } from './args.js';
import { isoSeconds, parseSince } from './duration.js';
import { loadStateConfig, stateOptions, withStateStore, type StateFlags } from './state-store.js';
import { table } from './table.js';
import { withExamples } from './help.js';

/** Without --since or --limit, the newest this many: a year of requests is not a screenful. */
const DEFAULT_LIMIT = 100;
const TYPES = ['request', 'grant', 'revoke', 'config'] as const;

interface AuditFlags extends StateFlags {
  since?: string;
  device?: string;
  type?: string;
  limit?: string;
  json?: boolean;
  by?: string;
}

export function registerAudit(program: Command): void {
  stateOptions(
    withExamples(program.command('audit'), [
      ['edgellm audit --device press-4 --type request --limit 20 -c config.yaml', 'a device\'s last 20 requests'],
      ['edgellm audit --since 2026-12-01T08:00Z --json -c config.yaml', 'since a time, as JSON'],
      ['edgellm audit --since 7d --by variant -c config.yaml', 'A/B variants compared: requests, error and cache hit rates, tokens/s, p95 latency'],
    ])
      .description('show the audit log: requests (allowed or denied, and how they ended), grants, revokes, config loads')
      .option('--since <when>', 'records from this long ago (30m, 2h, 7d) or since an ISO 8601 time (2026-12-01T08:00:00Z; local time without an offset)')
      .option('--device <device>', "only this device's records")
      .option('--type <type>', `only one kind: ${TYPES.join(', ')}`)
      .option('--limit <n>', `the newest N records (default without --since: ${DEFAULT_LIMIT})`)
      .option('--json', 'one JSON object per line')
      .option('--by <field>', 'one summary per value instead of the records: "variant" (A/B variants of the matching request records)'),
  ).action((flags: AuditFlags) => {
    const now = Date.now();
    const since = flags.since !== undefined ? parseSince('--since', flags.since, now) : undefined;
    const limit = flags.limit !== undefined ? parsePositiveInt('--limit', flags.limit) : since === undefined ? DEFAULT_LIMIT : undefined;
    if (flags.type !== undefined && !(TYPES as readonly string[]).includes(flags.type)) {
      throw new EdgeError('E_BAD_ARGUMENT', `--type takes one of ${TYPES.join(', ')}, got "${flags.type}"`);
    }
    if (flags.by !== undefined && flags.by !== 'variant') throw new EdgeError('E_BAD_ARGUMENT', `--by takes "variant", got "${flags.by}"`);
    const type = flags.type as AuditRecord['type'] | undefined;
    if (flags.by !== undefined) {
      // A summary reads every record that matches (no default limit: the newest 100 would skew it).
      return withStateStore(loadStateConfig(flags), (store) => {
        const limit = flags.limit !== undefined ? parsePositiveInt('--limit', flags.limit) : undefined;
        printVariants(summarizeVariants(store.audit.query({ since, device: flags.device, type: 'request', limit }).map((e) => e.record)), flags.json === true);
      });
    }
    withStateStore(loadStateConfig(flags), (store) => {
      const query = { since, device: flags.device, type };
      const entries = store.audit.query({ ...query, limit });
      if (flags.json) {
        for (const e of entries) process.stdout.write(`${JSON.stringify({ seq: e.seq, ...e.record })}\n`);
      } else if (entries.length === 0) {
        process.stdout.write('no audit records match\n');
      } else {
        process.stdout.write(table(['TIME', 'TYPE', 'DEVICE', 'ID', 'OUTCOME', 'DETAIL'], entries.map(row)));
      }
      if (limit !== undefined && entries.length === limit && flags.limit === undefined) {
        const total = store.audit.count(query);
        if (total > limit) process.stderr.write(`(the newest ${limit} of ${total} records; use --since or --limit for more)\n`);
      }
    });
  });
}

/** One line per variant: JSON, or a table (rates in percent, tokens/s and ms rounded). */
export function printVariants(rows: VariantSummary[], json: boolean): void {
  if (json) {
    for (const v of rows) process.stdout.write(`${JSON.stringify(v)}\n`);
    return;
  }
  if (rows.length === 0) {
    process.stdout.write('no request records with a variant match\n');
    return;
  }
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  process.stdout.write(
    table(
      ['MODEL', 'VARIANT', 'REQUESTS', 'TOKENS/S', 'P95 MS', 'ERRORS', 'CACHE HITS'],
      rows.map((v) => [v.name, v.variant, String(v.requests), v.mean_tokens_per_s?.toFixed(1) ?? '-', v.p95_latency_ms?.toFixed(0) ?? '-', pct(v.error_rate), pct(v.cache_hit_rate)]),
    ),
  );
}

/** One table row; DETAIL says what the other columns do not. */
function row(e: AuditEntry): string[] {
  const r = e.record;
  const time = isoSeconds(r.time);
  switch (r.type) {
    case 'request': {
      const tokens = r.prompt_tokens !== undefined || r.completion_tokens !== undefined ? `${r.prompt_tokens ?? '?'}+${r.completion_tokens ?? '?'} tokens` : '';
      const problem = r.denied ?? r.error;
      const detail = [
        r.model !== undefined ? `model ${r.model}${r.variant_of !== undefined ? ` (variant of ${r.variant_of})` : ''}` : '',
        r.route !== undefined ? `route ${r.route}${r.route_reason ? ` (${r.route_reason})` : ''}` : '',
        r.fallback ? 'fell back to local' : '',
        tokens,
        // Image and audio parts: kind, type and decoded size ("image/png 48211 B"); the data is never audited.
        r.media !== undefined && r.media.length > 0 ? `parts ${r.media.map((m) => `${m.kind} ${m.type}${m.bytes !== undefined ? ` ${m.bytes} B` : ''}`).join(' + ')}` : '',
        problem ? `${problem.code}: ${problem.message}` : '',
      ].filter((s) => s !== '');
      return [time, 'request', r.device, r.id, r.allowed ? r.outcome : 'denied', oneLine(detail.join(', '))];
    }
    case 'grant':
      return [time, 'grant', r.device, '', 'granted', `role ${r.role} until ${isoSeconds(r.expires_at)}${r.by ? ` by ${r.by}` : ''}`];
    case 'revoke':
      return [time, 'revoke', r.device, '', `removed ${r.removed}`, `role ${r.role === '*' ? 'all' : r.role}${r.by ? ` by ${r.by}` : ''}`];
    case 'config':
      return [time, 'config', '', '', 'loaded', `${r.source} (sha256 ${r.digest.slice(0, 12)})`];
  }
}

/** Messages and reasons stay on their row. */
const oneLine = (s: string) => s.replace(/[\r\n\t]+/g, ' ');
