/**
 * The daemon's log: one JSON object per line (pino) on stdout, which journald stores as it is, e.g.
 * {"level":"info","time":"2026-12-02T07:00:00.000Z","node":"pi-1","msg":"node pi-1 ready"}, plus the
 * structured fields a call site adds; on a terminal the same record is one readable line instead
 * (pino-pretty): `[08:00:00.000] INFO: node pi-1 ready {"attempt":2}` (log.format). Filtered by log.level. Secrets never reach it: every line passes
 * redact() on its way out (URL credentials, values under secret-looking keys such as password or
 * api_key, and the secrets the daemon names with protect()), so a message that quotes a broker URL or
 * an error body cannot leak the password or the upstream key. Other CLI commands print for humans.
 */
import { isatty } from 'node:tty';
import pino from 'pino';
import { prettyFactory } from 'pino-pretty';
import { redact, redactText } from './secret.js';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
/** json: one JSON object per line (journald, files, pipes); pretty: one readable line per record (people). */
export type LogFormat = 'json' | 'pretty';
/** Structured fields of one line (plain JSON values). */
export type LogFields = Record<string, unknown>;

export interface Logger {
  error(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  debug(msg: string, fields?: LogFields): void;
  /** Masks this value wherever it would appear in a later line (the broker password, the upstream key). */
  protect?(secret: string | undefined): void;
}

export interface LoggerOptions {
  /** Fields on every line (the daemon puts its node id there). */
  base?: LogFields;
  /** json unless told (tests read the JSON); the daemon passes resolveLogFormat(config.log.format). */
  format?: LogFormat;
}

/**
 * What log.format `auto` means for this process: pretty when stdout is a terminal, json otherwise (a
 * pipe, a file, journald). Under systemd stdout is the journal's socket (JOURNAL_STREAM names it), never
 * a terminal, so no check of that variable is needed, and a terminal that inherited it from a systemd
 * unit still gets readable lines.
 */
export function resolveLogFormat(setting: LogFormat | 'auto', fd = 1): LogFormat {
  if (setting !== 'auto') return setting;
  return isatty(fd) ? 'pretty' : 'json';
}

/**
 * One JSON line -> one readable line: local time, level, message, then the structured fields as
 * compact JSON. The node id is left out (it is this machine's own), and a newline inside a message
 * is shown as ⏎ so that a record stays one line. Colours only on a terminal, and never with NO_COLOR.
 */
function readable(sink: { write(line: string): unknown }, colorize: boolean): { write(line: string): void } {
  const pretty = prettyFactory({
    colorize,
    singleLine: true,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'node',
    // Not pino-pretty's multi-line error block: an `error` field stays on the record's one line.
    errorLikeObjectKeys: [],
    messageFormat: (record, key) => String(record[key] ?? '').replace(/\r?\n/g, ' ⏎ '),
  });
  return { write: (line) => void sink.write(pretty(line)) };
}

/**
 * A logger at `level`, JSON lines unless `opts.format` is pretty. Lines go to stdout, written synchronously so none is lost when the
 * process exits right after logging (the daemon logs a few lines per request, never per token), or to
 * `write` (tests), one complete line per call.
 */
export function createLogger(level: LogLevel, write?: (line: string) => void, opts: LoggerOptions = {}): Logger {
  const sink: { write(line: string): unknown } = write ? { write } : pino.destination({ fd: 1, sync: true });
  const destination = opts.format === 'pretty' ? readable(sink, !write && isatty(1) && process.env.NO_COLOR === undefined) : sink;
  const out = pino(
    {
      level,
      base: opts.base ?? null,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
  const secrets: string[] = [];
  const at = (l: LogLevel) => (msg: string, fields?: LogFields) => {
    if (!out.isLevelEnabled(l)) return;
    const text = redactText(msg, secrets);
    if (fields === undefined) out[l](text);
    else out[l](redact(fields, secrets), text);
  };
  return {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    protect(secret) {
      if (secret !== undefined && secret.trim() !== '' && !secrets.includes(secret)) secrets.push(secret);
    },
  };
}

/**
 * `log` with `fields` on every line: a request's stages log through one bound to its trace_id, so
 * every line about the request can be found by it. A call site's own fields win over the bound ones.
 */
export function withFields(log: Logger, fields: LogFields): Logger {
  const at = (l: LogLevel) => (msg: string, more?: LogFields) => log[l](msg, more === undefined ? fields : { ...fields, ...more });
  return {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    protect: (secret) => log.protect?.(secret),
  };
}
