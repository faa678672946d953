// The request schema: what is accepted, and errors that name the field and what it takes.
import t from 'tap';
import { decodeRequest, errorMessage } from '../../src/transport/mqtt/codec.js';
import { Topics } from '../../src/transport/mqtt/topics.js';

const decode = (v: unknown) => decodeRequest(Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)));

t.test('a full request is accepted as sent', async (t) => {
  const body = {
    id: '1', messages: [{ role: 'user', content: 'hi' }], model: 'qwen', max_tokens: 16, temperature: 0, top_p: 0.9, top_k: 40,
    min_p: 0.05, seed: 42, stop: ['\n'], stream: true, route: 'auto', local_only: false, priority: 9, deadline_ms: 5000, reply_to: 'a/b',
  };
  const d = decode(body);
  t.ok(d.ok);
  if (d.ok) t.same(d.request, body);
});

t.test('refusals name the field and what it takes', async (t) => {
  const cases: Array<[unknown, RegExp, string | null]> = [
    ['{"id": 1,', /not JSON/, null],
    ['[1, 2]', /must be a JSON object/, null],
    [{ prompt: 'x' }, /field "id" is missing/, null],
    [{ id: 7, prompt: 'x' }, /field "id" must be text, got number 7/, null],
    [{ id: 'a', prompt: 'x', colour: 'red', size: 2 }, /unknown field "colour"; unknown field "size"/, 'a'],
    [{ id: 'a', prompt: 'x', temperature: 3 }, /field "temperature" must be a number from 0 to 2, got number 3/, 'a'],
    [{ id: 'a', prompt: 'x', top_k: 1.5 }, /field "top_k" must be a whole number >= 0/, 'a'],
    [{ id: 'a', prompt: 'x', stop: [''] }, /field "stop\[0\]" must not be empty/, 'a'],
    [{ id: 'a', messages: [{ role: 'user' }] }, /field "messages\[0\]\.content" must be text, got nothing/, 'a'],
    [{ id: 'a', prompt: 'x', route: 'mars' }, /field "route" must be one of auto, local, cloud, got "mars"/, 'a'],
    [{ id: 'a', prompt: 'x', reply_to: 'a/+/b' }, /field "reply_to" must be a topic name without wildcards/, 'a'],
    [{ id: 'a' }, /exactly one of "prompt" or "messages"/, 'a'],
    [{ id: 'a', prompt: 'x', stream: 'yes' }, /field "stream" must be true or false/, 'a'],
  ];
  for (const [body, re, id] of cases) {
    const d = decode(body);
    t.notOk(d.ok, JSON.stringify(body));
    if (!d.ok) {
      t.equal(d.code, 'E_BAD_REQUEST');
      t.match(d.message, re, JSON.stringify(body));
      t.equal(d.id, id, 'the id is echoed when usable');
    }
  }
});

t.test('an invalid request still yields its reply_to for the error reply', async (t) => {
  const d = decode({ id: 'x', reply_to: 'dev/replies', prompt: 3 });
  t.notOk(d.ok);
  if (!d.ok) t.equal(d.replyTo, 'dev/replies');
});

t.test('error replies have the documented shape', async (t) => {
  t.same(JSON.parse(errorMessage(null, 'E_BAD_REQUEST', 'nope')), { id: null, type: 'error', error: { code: 'E_BAD_REQUEST', message: 'nope' } });
});

t.test('topics: shared requests in a fleet, never-shared cancels, device ids from topics', async (t) => {
  const solo = new Topics('edgellm', 'pi1');
  const fleet = new Topics('edgellm', 'pi1', 'line1');
  t.equal(solo.requestFilter(), 'edgellm/request/+');
  t.equal(fleet.requestFilter(), '$share/line1/edgellm/request/+');
  t.equal(fleet.cancelFilter(), 'edgellm/cancel/+');
  t.equal(solo.deviceOf('edgellm/request/press-4', 'request'), 'press-4');
  t.equal(solo.deviceOf('edgellm/request/a/b', 'request'), undefined);
  t.equal(solo.deviceOf('edgellm/cancel/press-4', 'request'), undefined);
  t.equal(solo.response('press-4'), 'edgellm/response/press-4');
  t.equal(solo.status(), 'edgellm/status/pi1');
  t.equal(solo.metrics(), 'edgellm/metrics/pi1');
});
