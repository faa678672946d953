// SseReader (src/policy/sse.ts): events however the stream is cut into chunks.
import t from 'tap';
import { SseReader, SseTooLarge } from '../src/policy/sse.js';

const STREAM = ': comment\r\ndata: {"a":1}\r\n\r\nevent: x\ndata: one\ndata: two\n\ndata:[DONE]\r\r\n';
const EVENTS = ['{"a":1}', 'one\ntwo', '[DONE]'];

t.test('the same events whatever the chunk boundaries, including between \\r and \\n', async (t) => {
  t.same(new SseReader(1 << 20).feed(STREAM), EVENTS, 'one chunk');
  for (let cut = 1; cut < STREAM.length; cut++) {
    const r = new SseReader(1 << 20);
    t.same([...r.feed(STREAM.slice(0, cut)), ...r.feed(STREAM.slice(cut))], EVENTS, `cut at ${cut}`);
  }
  const r = new SseReader(1 << 20);
  t.same([...STREAM].flatMap((c) => r.feed(c)), EVENTS, 'one character at a time');
});

t.test('an event or a line past the limit is SseTooLarge', async (t) => {
  const thrown = (f: () => unknown) => {
    try {
      f();
    } catch (err) {
      return err;
    }
    return undefined;
  };
  const event = thrown(() => new SseReader(8).feed('data: 0123456789\n\n'));
  t.ok(event instanceof SseTooLarge && /an event larger than 8 bytes/.test(event.message), String(event));
  const line = thrown(() => new SseReader(8).feed('data: 01234567890'));
  t.ok(line instanceof SseTooLarge && /a line longer than 8 bytes/.test(line.message), `a line without its end: ${String(line)}`);
});
