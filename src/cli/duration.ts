/**
 * Durations and points in time on the command line: `--for 2h`, `--since 90m`, `--since 2026-12-01`.
 * A duration is one or more number+unit parts (s, m, h, d), e.g. 30s, 1.5h, 1h30m; a bare number is
 * refused because its unit would be a guess.
 */
import { EdgeError } from '../errors.js';

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "1h30m" -> 5_400_000 (ms). Refuses anything else, zero, and durations above maxMs. */
export function parseDuration(flag: string, value: string, maxMs = Number.MAX_SAFE_INTEGER): number {
  const text = value.trim().toLowerCase();
  const part = /(\d+(?:\.\d+)?)([smhd])/g;
  let ms = 0;
  let consumed = 0;
  for (let m = part.exec(text); m !== null; m = part.exec(text)) {
    if (m.index !== consumed) break;
    ms += Number(m[1]) * UNIT_MS[m[2]!]!;
    consumed = m.index + m[0].length;
  }
  if (text === '' || consumed !== text.length) {
    throw new EdgeError('E_BAD_ARGUMENT', `${flag} takes a duration such as 30s, 90m, 2h, 1d or 1h30m (units s, m, h, d), got "${value}"`);
  }
  ms = Math.round(ms);
  if (ms <= 0) throw new EdgeError('E_BAD_ARGUMENT', `${flag} must be longer than zero, got "${value}"`);
  if (ms > maxMs) throw new EdgeError('E_BAD_ARGUMENT', `${flag} ${value} is longer than the most allowed, ${formatDuration(maxMs)}`);
  return ms;
}

/**
 * `--since`: a duration back from `now` ("1h"), or an ISO 8601 date or time ("2026-12-01",
 * "2026-12-01T08:00", "2026-12-01T08:00:00Z"); without an offset it is local time. Returns ms since the epoch.
 */
export function parseSince(flag: string, value: string, now: number): number {
  const text = value.trim();
  if (/^\d{4}-\d{2}-\d{2}/.test(text)) {
    // Date.parse reads a bare date as UTC but a date-time without offset as local: make both local.
    const t = Date.parse(/^\d{4}-\d{2}-\d{2}$/.test(text) ? `${text}T00:00` : text);
    if (Number.isNaN(t)) {
      throw new EdgeError('E_BAD_ARGUMENT', `${flag} "${value}" is not a valid ISO 8601 time (e.g. 2026-12-01, 2026-12-01T08:00, 2026-12-01T08:00:00Z)`);
    }
    return t;
  }
  try {
    return now - parseDuration(flag, text);
  } catch {
    throw new EdgeError('E_BAD_ARGUMENT', `${flag} takes a duration back from now (30m, 2h, 7d) or an ISO 8601 time (2026-12-01T08:00:00Z), got "${value}"`);
  }
}

/** 5_400_000 -> "1h30m": the largest unit and the next one (rounded down), "0s" under a second. */
export function formatDuration(ms: number): string {
  const units: Array<[string, number]> = [['d', 86_400], ['h', 3600], ['m', 60], ['s', 1]];
  const s = Math.max(0, Math.floor(ms / 1000));
  const i = units.findIndex(([, size]) => s >= size);
  if (i < 0) return '0s';
  const [big, bigSize] = units[i]!;
  let text = `${Math.floor(s / bigSize)}${big}`;
  const next = units[i + 1];
  if (next !== undefined) {
    const n = Math.floor((s % bigSize) / next[1]);
    if (n > 0) text += `${n}${next[0]}`;
  }
  return text;
}

/** ms since the epoch -> "2026-12-02T08:30:00Z" (UTC, whole seconds). */
export function isoSeconds(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}
