// W3C traceparent: what is taken, what is ignored (and why), what a reply carries.
import t from 'tap';
import { resumeTrace, startTrace, traceparentOf, traceparentProblem } from '../../src/protocol/trace-context.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';

t.test('a valid version-00 traceparent is joined: its trace id and flags, a new span of our own', async (t) => {
  const { trace, ignored } = startTrace(`00-${TRACE}-${PARENT}-00`);
  t.equal(ignored, undefined);
  t.equal(trace.traceId, TRACE);
  t.equal(trace.parentId, PARENT);
  t.equal(trace.flags, '00', 'the caller’s flags are kept (not sampled stays not sampled)');
  t.match(trace.spanId, /^[0-9a-f]{16}$/);
  t.not(trace.spanId, PARENT);
  t.equal(traceparentOf(trace), `00-${TRACE}-${trace.spanId}-00`);
  t.same(startTrace([`00-${TRACE}-${PARENT}-01`]).trace.traceId, TRACE, 'one value in a list is that value');
});

t.test('no traceparent: a new trace, random and never all zeros', async (t) => {
  const a = startTrace(undefined);
  const b = startTrace(undefined);
  t.equal(a.ignored, undefined, 'nothing to warn about');
  t.match(a.trace.traceId, /^[0-9a-f]{32}$/);
  t.not(a.trace.traceId, b.trace.traceId);
  t.equal(a.trace.flags, '01');
  t.equal(a.trace.parentId, undefined);
});

t.test('every invalid form is ignored with a reason, and a new trace is started', async (t) => {
  const cases: [string | string[], RegExp][] = [
    [`00-${'0'.repeat(32)}-${PARENT}-01`, /trace id is all zeros/],
    [`00-${TRACE}-${'0'.repeat(16)}-01`, /parent id is all zeros/],
    [`00-${TRACE.toUpperCase()}-${PARENT}-01`, /lowercase hex/],
    [`01-${TRACE}-${PARENT}-01`, /version 01 is not supported/],
    [`00-${TRACE}-${PARENT}-01-extra`, /is not "00-/],
    [`00-${TRACE}-${PARENT}`, /is not "00-/],
    ['', /is not "00-/],
    ['x'.repeat(1000), /1000 characters long/],
    [[`00-${TRACE}-${PARENT}-01`, `00-${TRACE}-${PARENT}-01`], /2 traceparent values came/],
  ];
  for (const [value, why] of cases) {
    const { trace, ignored } = startTrace(value);
    t.match(ignored, why, JSON.stringify(value).slice(0, 60));
    t.match(ignored, /^ignored the traceparent .*; started a new trace$/);
    t.not(trace.traceId, TRACE);
    t.ok(ignored!.length < 300, 'a long value is shortened in the warning');
  }
  t.equal(traceparentProblem(`00-${TRACE}-${PARENT}-01`), undefined);
});

t.test('a stored traceparent names the same trace and span again; a missing one starts a new trace', async (t) => {
  const started = startTrace(`00-${TRACE}-${PARENT}-01`).trace;
  const again = resumeTrace(traceparentOf(started));
  t.equal(again.traceId, TRACE);
  t.equal(again.spanId, started.spanId);
  t.equal(again.flags, '01');
  t.match(resumeTrace(null).traceId, /^[0-9a-f]{32}$/);
});
