/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/) as far as a request needs it: the
 * `traceparent` a caller sends (MQTT 5 user property or HTTP header) names the trace the request joins;
 * without one (or with one that is not valid) the daemon starts a trace of its own. Either way the
 * request gets its own span id, and what it sends back carries `00-<trace id>-<its span id>-<flags>`.
 *
 *   traceparent = "00" "-" trace-id (32 lowercase hex, not all zero) "-" parent-id (16 lowercase hex,
 *                 not all zero) "-" trace-flags (2 lowercase hex)
 *
 * Only version 00 is taken: a later version's fields may mean something else.
 */
import { randomBytes } from 'node:crypto';
import { withFields, type Logger } from '../log.js';

export interface TraceContext {
  /** 32 lowercase hex digits (16 bytes), never all zero. */
  traceId: string;
  /** This request's span: 16 lowercase hex digits (8 bytes), never all zero. */
  spanId: string;
  /** The caller's span, when a valid traceparent came with the request. */
  parentId?: string;
  /** 2 hex digits; the caller's (its sampled bit kept), or "01" for a trace started here. */
  flags: string;
}

/** What startTrace made of the request's traceparent, and the warning to log when it was refused. */
export interface StartedTrace {
  trace: TraceContext;
  /** Set when a traceparent came and was ignored: why, in words for the log. */
  ignored?: string;
}

const VERSION_00 = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const allZero = (hex: string) => /^0+$/.test(hex);

/** Why `value` is not a valid version-00 traceparent, or undefined when it is one. */
export function traceparentProblem(value: string): string | undefined {
  if (value.length > 256) return `it is ${value.length} characters long (a traceparent has 55)`;
  const m = VERSION_00.exec(value);
  if (!m) {
    if (/^[0-9a-f]{2}-/.test(value) && !value.startsWith('00-')) return `version ${value.slice(0, 2)} is not supported (only 00)`;
    return 'it is not "00-<32 lowercase hex trace id>-<16 lowercase hex parent id>-<2 hex flags>"';
  }
  if (allZero(m[1]!)) return 'its trace id is all zeros';
  if (allZero(m[2]!)) return 'its parent id is all zeros';
  return undefined;
}

/**
 * The trace a request belongs to: the caller's (from a valid `traceparent`), else a new one. An
 * invalid traceparent never fails the request: it is ignored, and `ignored` says why.
 */
export function startTrace(traceparent: string | readonly string[] | undefined): StartedTrace {
  const own = { spanId: randomId(8) };
  if (traceparent === undefined) return { trace: { traceId: randomId(16), ...own, flags: '01' } };
  const value = typeof traceparent === 'string' ? traceparent : traceparent.length === 1 ? traceparent[0]! : undefined;
  const problem = value === undefined ? `${traceparent.length} traceparent values came (one is allowed)` : traceparentProblem(value);
  if (problem !== undefined || value === undefined) {
    return { trace: { traceId: randomId(16), ...own, flags: '01' }, ignored: `ignored the traceparent ${JSON.stringify(shorten(String(traceparent)))}: ${problem}; started a new trace` };
  }
  const [, traceId, parentId, flags] = VERSION_00.exec(value)!;
  return { trace: { traceId: traceId!, ...own, parentId: parentId!, flags: flags! } };
}

/**
 * startTrace, and `log` bound to the trace's trace_id (every line about the request carries it); an
 * ignored traceparent is a warning there, about `what` ("request from press-1").
 */
export function traceRequest(traceparent: string | readonly string[] | undefined, log: Logger, what: string): { trace: TraceContext; log: Logger } {
  const { trace, ignored } = startTrace(traceparent);
  const bound = withFields(log, { trace_id: trace.traceId });
  if (ignored !== undefined) bound.warn(`${what}: ${ignored}`);
  return { trace, log: bound };
}

/** The traceparent of what this request sends on (its replies): its trace, its own span. */
export function traceparentOf(t: TraceContext): string {
  return `00-${t.traceId}-${t.spanId}-${t.flags}`;
}

/** The TraceContext a stored traceparent (traceparentOf's) names again, e.g. for a request resumed after a restart. */
export function resumeTrace(stored: string | null | undefined): TraceContext {
  const m = stored ? VERSION_00.exec(stored) : null;
  if (!m) return startTrace(undefined).trace;
  return { traceId: m[1]!, spanId: m[2]!, flags: m[3]! };
}

/** Random lowercase hex of `bytes` bytes, never all zero. */
function randomId(bytes: number): string {
  for (;;) {
    const hex = randomBytes(bytes).toString('hex');
    if (!allZero(hex)) return hex;
  }
}

const shorten = (s: string) => (s.length > 80 ? `${s.slice(0, 80)}...` : s);
