// Stop strings over a stream of text chunks (src/engine/stop.ts).
import t from 'tap';
import { EdgeError } from '../src/errors.js';
import { StopMatcher } from '../src/engine/stop.js';

interface Run {
  /** What push() emitted, chunk by chunk, then what flush() released (when no stop). */
  pieces: string[];
  text: string;
  stop: string | undefined;
}

function run(stops: string[], chunks: string[]): Run {
  const m = new StopMatcher(stops);
  const pieces: string[] = [];
  let stop: string | undefined;
  for (const c of chunks) {
    const step = m.push(c);
    pieces.push(step.text);
    if (step.stopped) {
      stop = step.stop;
      break;
    }
  }
  if (stop === undefined) pieces.push(m.flush());
  return { pieces, text: pieces.join(''), stop };
}

/** Every way to cut `text` into `parts` non-empty chunks (code-unit positions). */
function* splits(text: string, parts: number, from = 0): Generator<string[]> {
  if (parts === 1) {
    if (from < text.length) yield [text.slice(from)];
    return;
  }
  for (let cut = from + 1; cut < text.length; cut++) {
    for (const rest of splits(text, parts - 1, cut)) yield [text.slice(from, cut), ...rest];
  }
}

t.test('a stop split across 2 to 5 chunks stops the stream, whatever the cuts', async (t) => {
  const text = 'Hi there. END of it';
  let runs = 0;
  for (let parts = 2; parts <= 5; parts++) {
    for (const chunks of splits(text, parts)) {
      const r = run(['END'], chunks);
      runs++;
      if (r.text !== 'Hi there. ' || r.stop !== 'END') {
        t.fail(`cuts ${JSON.stringify(chunks)} gave ${JSON.stringify(r)}`);
        return;
      }
    }
  }
  t.pass(`${runs} different cuts all gave "Hi there. " and stop "END"`);
});

t.test('text that may begin a stop is held back, and nothing after the stop is emitted', async (t) => {
  const r = run(['END'], ['Hi E', 'N', 'D', ' more']);
  t.same(r.pieces, ['Hi ', '', '']);
  t.equal(r.stop, 'END');
});

t.test('a held prefix is released when it turns out not to be a stop', async (t) => {
  t.same(run(['END'], ['The EN', 'TRY', ' is open']).pieces, ['The ', 'ENTRY', ' is open', '']);
  t.same(run(['END'], ['The EN']).pieces, ['The ', 'EN'], 'flush() releases it at the end');
  // "aab" after "aa": the held "aa" shifts by one when "a" follows.
  t.same(run(['aab'], ['aa', 'a', 'b', 'c']), { pieces: ['', 'a', ''], text: 'a', stop: 'aab' });
});

t.test('a stop at the very start emits nothing', async (t) => {
  t.same(run(['<|end|>'], ['<|end|>', 'after']), { pieces: [''], text: '', stop: '<|end|>' });
  t.same(run(['<|end|>'], ['<|', 'end|>after']), { pieces: ['', ''], text: '', stop: '<|end|>' });
});

t.test('of overlapping stops, the one that completes first wins', async (t) => {
  // "bc" is complete at position 3 ("xabc"), before "abcd" could be.
  t.same(run(['abcd', 'bc'], ['xabcd']), { pieces: ['xa'], text: 'xa', stop: 'bc' });
  t.same(run(['abcd', 'bc'], ['xa', 'b', 'c', 'd']), { pieces: ['x', '', 'a'], text: 'xa', stop: 'bc' });
  // Both complete at the same point: the longer one, so less text is emitted.
  t.same(run(['b', 'ab'], ['xab']), { pieces: ['x'], text: 'x', stop: 'ab' });
  t.same(run(['b', 'ab'], ['xa', 'b']), { pieces: ['x', ''], text: 'x', stop: 'ab' });
  // A stop inside another's prefix: "END" stops before "ENDING" could.
  t.equal(run(['ENDING', 'END'], ['the ENDI', 'NG']).text, 'the ');
});

t.test('emoji around a stop come out whole, even when a chunk cuts one in half', async (t) => {
  const text = 'ok 😀STOP😀 no';
  for (let parts = 2; parts <= 4; parts++) {
    for (const chunks of splits(text, parts)) {
      const r = run(['STOP'], chunks);
      if (r.text !== 'ok 😀' || r.pieces.some((p) => /[\uD800-\uDBFF]$/.test(p) || /^[\uDC00-\uDFFF]/.test(p))) {
        t.fail(`cuts ${JSON.stringify(chunks)} gave ${JSON.stringify(r.pieces)}`);
        return;
      }
    }
  }
  t.pass('every cut gives "ok 😀" in well-formed pieces');
  // A stop made of an emoji, its surrogates arriving in two chunks.
  t.same(run(['🛑'], ['go 🛑'.slice(0, 4), '🛑'.slice(1) + 'x']), { pieces: ['go ', ''], text: 'go ', stop: '🛑' });
  t.same(run(['🛑x'], ['a🛑', 'y']).pieces, ['a', '🛑y', '']);
});

t.test('without stops, text passes through as it comes', async (t) => {
  t.same(run([], ['Hello', ', ', 'world']).pieces, ['Hello', ', ', 'world', '']);
  t.same(run([], ['a😀b']).pieces, ['a😀b', '']);
});

t.test('after a stop, the matcher ignores further text', async (t) => {
  const m = new StopMatcher(['.']);
  t.same(m.push('One. Two.'), { text: 'One', stopped: true, stop: '.' });
  t.ok(m.stopped);
  t.same(m.push('Three'), { text: '', stopped: true, stop: '.' });
  t.equal(m.flush(), '');
});

t.test('empty or non-string stops are E_BAD_REQUEST naming the index', async (t) => {
  for (const [stops, want] of [
    [['ok', ''], /stop\[1\] is empty/],
    [['ok', 3], /stop\[1\] must be a string, got number/],
    ['END', /stop must be an array/],
  ] as Array<[unknown, RegExp]>) {
    try {
      new StopMatcher(stops as string[]);
      t.fail(`accepted ${JSON.stringify(stops)}`);
    } catch (err) {
      t.ok(err instanceof EdgeError && err.code === 'E_BAD_REQUEST');
      t.match((err as Error).message, want);
    }
  }
});
