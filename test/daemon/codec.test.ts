// The request schema: what is accepted, and errors that name the field and what it takes.
import t from 'tap';
import { decodeRequest, errorMessage } from '../../src/protocol/codec.js';
import { Topics } from '../../src/protocol/topics.js';
import { audioPart, imagePart } from '../helpers/media.js';

const LIMITS = { maxPayloadBytes: 262144 };
const decode = (v: unknown) => decodeRequest(Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)), LIMITS);

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
    [{ id: 'a', prompt: 'x', top_p: 0 }, /field "top_p" must be a number above 0, at most 1 \(1 = off\), got number 0/, 'a'],
    [{ id: 'a', prompt: 'x', stop: [''] }, /field "stop\[0\]" must not be empty/, 'a'],
    [{ id: 'a', messages: [{ role: 'user' }] }, /field "messages\[0\]\.content" must be text or a list of content parts, got nothing/, 'a'],
    [{ id: 'a', messages: [['user', 'hi']] }, /field "messages\[0\]" must be an object \{role, content\}, got a list/, 'a'],
    ['{"id": "a", "prompt": ' + '['.repeat(100_000) + ']'.repeat(100_000) + '}', /field "prompt" must be text, got a list/, 'a'],
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

t.test('a payload over limits.max_payload_bytes is E_TOO_LARGE, refused before it is parsed', async (t) => {
  const body = Buffer.from(JSON.stringify({ id: 'big', prompt: 'x'.repeat(2000), reply_to: 'dev/r' }));
  const d = decodeRequest(body, { maxPayloadBytes: 1000 });
  t.notOk(d.ok);
  if (!d.ok) {
    t.equal(d.code, 'E_TOO_LARGE');
    t.match(d.message, new RegExp(`${body.length} bytes; the limit is 1000 \\(limits\\.max_payload_bytes\\)`));
    t.equal(d.id, null, 'unparsed, so no id');
    t.equal(d.replyTo, undefined, 'unparsed, so no reply_to');
  }
  // Exactly at the limit is fine, and the limit is in bytes, not characters.
  const euro = Buffer.from(JSON.stringify({ id: 'e', prompt: '€€€' }));
  t.ok(decodeRequest(euro, { maxPayloadBytes: euro.length }).ok);
  t.notOk(decodeRequest(euro, { maxPayloadBytes: euro.length - 1 }).ok);
});

t.test('invalid UTF-8 is refused, never replaced', async (t) => {
  const good = Buffer.from('{"id": "u", "prompt": "caf\u00e9 ');
  const cases: Array<[string, Buffer, number]> = [
    ['a stray continuation byte', Buffer.concat([good, Buffer.from([0x80]), Buffer.from('"}')]), good.length],
    ['an overlong encoding of "/"', Buffer.concat([good, Buffer.from([0xc0, 0xaf]), Buffer.from('"}')]), good.length],
    ['a UTF-8 encoded surrogate', Buffer.concat([good, Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]), good.length],
    ['a truncated character', Buffer.concat([good, Buffer.from([0xe2, 0x82]), Buffer.from('"}')]), good.length],
    ['a character cut off at the end', Buffer.concat([good, Buffer.from([0xf0, 0x9f, 0x98])]), good.length],
    ['a code point above U+10FFFF', Buffer.concat([good, Buffer.from([0xf4, 0x90, 0x80, 0x80]), Buffer.from('"}')]), good.length],
  ];
  for (const [what, payload, at] of cases) {
    const d = decodeRequest(payload, LIMITS);
    t.notOk(d.ok, what);
    if (!d.ok) {
      t.equal(d.code, 'E_BAD_REQUEST', what);
      t.match(d.message, new RegExp(`not valid UTF-8 \\(at byte ${at}\\)`), what);
    }
  }
  const lone = decode('{"id": "s", "prompt": "half a pair: \\ud800"}');
  t.notOk(lone.ok, 'a lone surrogate escape');
  if (!lone.ok) t.match(lone.message, /field "prompt" must be valid Unicode/);
  const pair = decode('{"id": "p", "prompt": "a pair: \\ud83d\\ude00"}');
  t.ok(pair.ok, 'an escaped surrogate pair is a valid character');
  const chat = decode({ id: 'c', messages: [{ role: 'user', content: 'ok' }], stop: ['\ud800'] });
  t.notOk(chat.ok);
  if (!chat.ok) t.match(chat.message, /field "stop\[0\]" must be valid Unicode/);
});

t.test('an error reply names a few problems, never thousands, and never echoes a huge value', async (t) => {
  const d = decode({ id: 'many', messages: Array.from({ length: 5000 }, () => 1) });
  t.notOk(d.ok);
  if (!d.ok) {
    t.match(d.message, /field "messages\[0\]" .*; and 4992 more problems$/);
    t.ok(d.message.length < 4000, `${d.message.length} characters`);
  }
  const longKey = decode({ id: 'k', prompt: 'x', ['k'.repeat(100_000)]: 1 });
  t.notOk(longKey.ok);
  if (!longKey.ok) t.ok(longKey.message.length < 400, `unknown huge field: ${longKey.message.length} characters`);
  const longId = decode({ id: 'i'.repeat(10_000), prompt: 'x' });
  t.notOk(longId.ok);
  if (!longId.ok) {
    t.equal(longId.id, null, 'an id too long to be valid is not echoed');
    t.match(longId.message, /field "id" must be at most 200 characters/);
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

t.test('logprobs fields: taken when valid, E_BAD_LOGPROBS naming the rule otherwise', async (t) => {
  const ok = decode({ id: 'l', prompt: 'x', logprobs: true, top_logprobs: 20 });
  t.ok(ok.ok && ok.request.logprobs === true && ok.request.top_logprobs === 20);
  const refusals: Array<[object, string, RegExp]> = [
    [{ logprobs: true, top_logprobs: 21 }, 'E_BAD_LOGPROBS', /top_logprobs must be a whole number from 0 to 20, got 21/],
    [{ logprobs: true, top_logprobs: 0.5 }, 'E_BAD_LOGPROBS', /got 0.5/],
    [{ top_logprobs: 1 }, 'E_BAD_LOGPROBS', /needs logprobs: true/],
    [{ logprobs: true, route: 'cloud' }, 'E_BAD_LOGPROBS', /local model only/],
    [{ logprobs: 'yes' }, 'E_BAD_REQUEST', /logprobs.*must be true or false/],
  ];
  for (const [fields, code, message] of refusals) {
    const d = decode({ id: 'l', prompt: 'x', ...fields });
    t.notOk(d.ok, JSON.stringify(fields));
    if (d.ok) continue;
    t.equal(d.code, code, JSON.stringify(fields));
    t.equal(d.id, 'l', 'the id is echoed');
    t.match(d.message, message);
  }
});

t.test('an embedding request (op "embed") takes input, a text or a list of texts, and no generation fields', async (t) => {
  for (const body of [{ id: 'e', op: 'embed', input: 'x' }, { id: 'e', op: 'embed', input: ['a', 'b'], model: 'bge', priority: 2, route: 'local' }]) {
    const d = decode(body);
    t.ok(d.ok, JSON.stringify(body));
    if (d.ok) t.same(d.request, body);
  }
  t.ok(decode({ id: 'g', op: 'generate', prompt: 'x' }).ok, 'op "generate" is the default made explicit');
  const cases: Array<[unknown, RegExp]> = [
    [{ id: 'e', op: 'embed' }, /needs "input"/],
    [{ id: 'e', op: 'embed', input: 7 }, /field "input" must be a text or a list of texts/],
    [{ id: 'e', op: 'embed', input: ['a', ''] }, /field "input\[1\]" must not be empty/],
    [{ id: 'e', op: 'embed', input: Array(2049).fill('a') }, /at most 2048 texts/],
    [{ id: 'e', op: 'embed', input: 'x', max_tokens: 5, stream: true }, /field "max_tokens" is not read by an embedding request.*field "stream" is not read/],
    [{ id: 'e', op: 'embed', input: 'x', route: 'cloud' }, /embeddings are computed on this node/],
    [{ id: 'e', prompt: 'x', input: 'x' }, /field "input" is read by embedding requests only: add "op": "embed"/],
    [{ id: 'e', op: 'classify', prompt: 'x' }, /field "op" must be "generate" or "embed"/],
  ];
  for (const [body, re] of cases) {
    const d = decode(body);
    t.notOk(d.ok, JSON.stringify(body).slice(0, 80));
    if (!d.ok) t.match(d.message, re, JSON.stringify(body).slice(0, 80));
  }
});

t.test('image and audio parts are taken as OpenAI content parts, checked with multimodal.*', async (t) => {
  const parts = [{ type: 'text', text: 'What is this?' }, imagePart(), audioPart()];
  const d = decode({ id: 'mm', messages: [{ role: 'user', content: parts }], route: 'auto' });
  t.ok(d.ok, d.ok ? 'accepted' : d.message);
  if (d.ok) t.same(d.request.messages, [{ role: 'user', content: parts }], 'the parts as sent');
  const text = decode({ id: 'tx', messages: [{ role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }] });
  if (text.ok) t.same(text.request.messages, [{ role: 'user', content: 'ab' }], 'text parts only: one string, as the engine reads it');
  else t.fail(text.message);

  const refused = (body: object, media = { maxPartBytes: 131072, httpsImageUrls: false }) => {
    const r = decodeRequest(Buffer.from(JSON.stringify(body)), { ...LIMITS, media });
    if (r.ok) throw new Error(`accepted ${JSON.stringify(body).slice(0, 100)}`);
    return r;
  };
  const one = (part: object) => ({ id: 'p', messages: [{ role: 'user', content: [part] }] });
  t.match(refused(one(imagePart()), { maxPartBytes: 10, httpsImageUrls: false }), { code: 'E_TOO_LARGE', id: 'p', message: /messages\[0\]\.content\[0\]\.image_url\.url: the image\/png image is \d+ bytes; the limit is 10 bytes per part \(multimodal\.max_part_bytes\)/ });
  t.match(refused(one({ type: 'image_url', image_url: { url: 'data:image/png,notbase64' } })), { code: 'E_BAD_REQUEST', message: /is not a base64 data URL/ });
  t.match(refused(one({ type: 'video_url', video_url: { url: 'x' } })), { code: 'E_BAD_REQUEST', message: /"video_url" is not supported: content parts are text, image_url/ });
  t.match(refused(one(audioPart(undefined, 'flac' as 'wav'))), { code: 'E_BAD_REQUEST', message: /format "flac" is not supported: send the audio as "wav" or "mp3"/ });
  t.match(refused({ ...one(imagePart()), logprobs: true }), { code: 'E_BAD_LOGPROBS', message: /answered by the upstream: drop logprobs/ });
  t.match(refused({ ...one(imagePart()), adapter: 'tone' }), { code: 'E_BAD_REQUEST', message: /a LoRA adapter runs on the local text model.*drop the adapter/ });
  t.match(refused({ id: 's', messages: [{ role: 'user', content: [{ type: 'text', text: '\ud800' }] }] }), { code: 'E_BAD_REQUEST', message: /messages\[0\]\.content" must be valid Unicode/ });
});
