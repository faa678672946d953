// Durations and times on the command line: --for 2h, --since 90m or an ISO time.
import t from 'tap';
import { formatDuration, isoSeconds, parseDuration, parseSince } from '../src/cli/duration.js';

t.test('durations are number+unit parts in s, m, h, d', async (t) => {
  t.equal(parseDuration('--for', '30s'), 30_000);
  t.equal(parseDuration('--for', '90m'), 5_400_000);
  t.equal(parseDuration('--for', '2h'), 7_200_000);
  t.equal(parseDuration('--for', '1d'), 86_400_000);
  t.equal(parseDuration('--for', '1h30m'), 5_400_000);
  t.equal(parseDuration('--for', '1.5h'), 5_400_000);
  t.equal(parseDuration('--for', ' 2H '), 7_200_000, 'case and surrounding spaces do not matter');
});

t.test('anything else is refused with the flag and the value', async (t) => {
  for (const bad of ['', '2', 'h', '2 h', '2w', '-1h', '1h-', 'h2', '1h 30m', '2hours']) {
    t.throws(() => parseDuration('--for', bad), { code: 'E_BAD_ARGUMENT', message: /^--for takes a duration/ }, JSON.stringify(bad));
  }
  t.throws(() => parseDuration('--for', '0m'), { message: /longer than zero/ });
  t.throws(() => parseDuration('--for', '2d', 86_400_000), { message: /--for 2d is longer than the most allowed, 1d/ });
});

t.test('--since is a duration back from now or an ISO 8601 time (local without an offset)', async (t) => {
  const now = Date.UTC(2026, 11, 2, 12, 0, 0);
  t.equal(parseSince('--since', '1h', now), now - 3_600_000);
  t.equal(parseSince('--since', '2026-12-01T08:00:00Z', now), Date.UTC(2026, 11, 1, 8));
  t.equal(parseSince('--since', '2026-12-01T08:00:00+02:00', now), Date.UTC(2026, 11, 1, 6));
  t.equal(parseSince('--since', '2026-12-01T08:00', now), new Date(2026, 11, 1, 8).getTime(), 'local time');
  t.equal(parseSince('--since', '2026-12-01', now), new Date(2026, 11, 1).getTime(), 'a bare date is local midnight too');
  t.throws(() => parseSince('--since', '2026-13-45', now), { code: 'E_BAD_ARGUMENT', message: /not a valid ISO 8601 time/ });
  t.throws(() => parseSince('--since', 'yesterday', now), { code: 'E_BAD_ARGUMENT', message: /duration back from now/ });
});

t.test('formatDuration shows the two largest units, rounded down', async (t) => {
  t.equal(formatDuration(0), '0s');
  t.equal(formatDuration(999), '0s');
  t.equal(formatDuration(45_000), '45s');
  t.equal(formatDuration(5_400_000), '1h30m');
  t.equal(formatDuration(7_200_000), '2h');
  t.equal(formatDuration(86_400_000 + 3_600_000 + 61_000), '1d1h');
  t.equal(formatDuration(7_199_999), '1h59m');
  t.equal(isoSeconds(Date.UTC(2026, 11, 2, 8, 30, 5, 999)), '2026-12-02T08:30:05Z');
});
