// ReplyStream, the streamed reply as the device has it: what a resumed request sends given what the
// store recorded (seq, acknowledged, the device's text length and hash), and text held back while the
// broker is away. A device that appends chunks and clears on restart/fallback must end with the answer.
import t from 'tap';
import { createHash } from 'node:crypto';
import { ReplyStream } from '../../src/daemon/request/reply-stream.js';
import type { Store, StreamMark } from '../../src/store/index.js';
import type { ReplyChannel } from '../../src/transport/mqtt/session.js';

const hash = (text: string) => createHash('sha256').update(text, 'utf16le').digest('hex');

function setup(mark: StreamMark, enabled = true) {
  const sent: Array<{ seq: number; type: string; text?: string; discarded_chars?: number }> = [];
  const marks: Array<{ seq: number; chars: number; hash: string | null }> = [];
  const acked: number[] = [];
  let open = true;
  const channel: ReplyChannel = {
    isOpen: () => open,
    chunk: (_topic, _corr, payload, opts) => {
      sent.push(JSON.parse(payload) as (typeof sent)[number]);
      opts?.acknowledged?.();
    },
    deliver: () => undefined,
  };
  const store = { requests: { markStreamed: (_d: string, _i: string, m: (typeof marks)[number]) => marks.push(m), streamAcknowledged: (_d: string, _i: string, seq: number) => acked.push(seq) } } as unknown as Store;
  const stream = new ReplyStream({ channel, store }, { device: 'd', id: 'q', replyTopic: 'r', correlation: null }, enabled, mark);
  /** What a naive device shows. */
  const shown = (before = '') => sent.reduce((text, m) => (m.type === 'chunk' ? text + m.text : m.type === 'restart' || m.type === 'fallback' ? '' : text), before);
  return { stream, sent, marks, acked, shown, setOpen: (o: boolean) => (open = o) };
}

t.test('a fresh stream sends each piece as a chunk, recording it first and its PUBACK after', async (t) => {
  const { stream, sent, marks, acked } = setup({ seq: 0, acked: 0, chars: 0, hash: null });
  stream.begin(false);
  stream.piece('Hello');
  stream.piece(' world');
  stream.end();
  t.same(sent, [{ id: 'q', type: 'chunk', seq: 0, text: 'Hello' }, { id: 'q', type: 'chunk', seq: 1, text: ' world' }]);
  t.same(marks, [{ seq: 1, chars: 5, hash: hash('Hello') }, { seq: 2, chars: 11, hash: hash('Hello world') }], 'the mark is what the device will hold');
  t.same(acked, [1, 2]);
});

t.test('resumed and repeatable: the device\'s text is regenerated silently, then the stream continues its seq', async (t) => {
  const { stream, sent, shown } = setup({ seq: 3, acked: 3, chars: 11, hash: hash('Hello world') });
  stream.begin(true);
  for (const p of ['Hel', 'lo w', 'orld, how', ' are you']) stream.piece(p);
  stream.end();
  t.same(sent.map((m) => [m.seq, m.type, m.text]), [[3, 'chunk', ', how'], [4, 'chunk', ' are you']], 'the piece across the boundary is cut there');
  t.equal(shown('Hello world'), 'Hello world, how are you');
});

t.test('resumed, repeatable, but the text came out differently: restart, then the whole new text', async (t) => {
  const { stream, sent, shown } = setup({ seq: 3, acked: 3, chars: 11, hash: hash('Hello world') });
  stream.begin(true);
  stream.piece('Hello there, friend');
  t.match(sent[0], { seq: 3, type: 'restart', reason: /came out differently/, discarded_chars: 11 });
  t.match(sent[1], { seq: 4, type: 'chunk', text: 'Hello there, friend' });
  t.equal(shown('Hello world'), 'Hello there, friend');
});

t.test('resumed with a message the broker never acknowledged: restart, even when repeatable', async (t) => {
  const { stream, sent } = setup({ seq: 3, acked: 2, chars: 11, hash: hash('Hello world') });
  stream.begin(true);
  stream.piece('Hello world, again');
  t.match(sent[0], { seq: 3, type: 'restart', reason: /may not have reached the broker/ });
});

t.test('resumed and sampled: restart before the first chunk', async (t) => {
  const { stream, sent, shown } = setup({ seq: 5, acked: 5, chars: 4, hash: hash('abcd') });
  stream.begin(false);
  stream.piece('xyz');
  t.same(sent.map((m) => [m.seq, m.type]), [[5, 'restart'], [6, 'chunk']]);
  t.equal(shown('abcd'), 'xyz');
});

t.test('a repeatable run that ends shorter than what the device had is a restart at its end', async (t) => {
  const { stream, sent, shown } = setup({ seq: 2, acked: 2, chars: 11, hash: hash('Hello world') });
  stream.begin(true);
  stream.piece('Hello');
  t.same(sent, [], 'silent while it may still be regenerating');
  stream.end();
  t.equal(shown('Hello world'), 'Hello');
});

t.test('text generated while the broker is away goes out as one chunk once it is back', async (t) => {
  const { stream, sent, setOpen } = setup({ seq: 0, acked: 0, chars: 0, hash: null });
  stream.begin(false);
  stream.piece('a');
  setOpen(false);
  stream.piece('b');
  stream.piece('c');
  setOpen(true);
  stream.piece('d');
  t.same(sent.map((m) => m.text), ['a', 'bcd']);
});

t.test('a fallback voids the device\'s text; the local attempt follows with seq counting on', async (t) => {
  const { stream, sent, shown } = setup({ seq: 0, acked: 0, chars: 0, hash: null });
  stream.begin(false);
  stream.piece('cloud text');
  stream.fallback('upstream failed (stream cut)');
  stream.begin(true);
  stream.piece('local text');
  stream.end();
  t.same(sent.map((m) => [m.seq, m.type]), [[0, 'chunk'], [1, 'fallback'], [2, 'chunk']]);
  t.match(sent[1], { discarded_chars: 10 });
  t.equal(shown(), 'local text');
});

t.test('nothing is sent for a request that did not ask for a stream', async (t) => {
  const { stream, sent, marks } = setup({ seq: 0, acked: 0, chars: 0, hash: null }, false);
  stream.begin(false);
  stream.piece('x');
  stream.fallback('f');
  stream.end();
  t.same([sent, marks], [[], []]);
});
