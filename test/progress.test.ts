// Long operations show a status line on a terminal and nothing otherwise.
import t from 'tap';
import { PassThrough } from 'node:stream';
import { withStatus } from '../src/cli/progress.js';

function fakeStream(isTTY: boolean) {
  const s = new PassThrough() as PassThrough & { isTTY?: boolean };
  s.isTTY = isTTY;
  let out = '';
  s.on('data', (d: Buffer) => (out += d.toString()));
  return { stream: s as unknown as NodeJS.WriteStream, text: () => out };
}

t.test('on a terminal the label is drawn, then erased', async (t) => {
  const f = fakeStream(true);
  const v = await withStatus('measuring', new Promise((r) => setTimeout(() => r(42), 300)), f.stream);
  t.equal(v, 42);
  t.match(f.text(), /measuring\.\.\. 0s/);
  t.ok(f.text().endsWith('\r\x1b[2K'), 'the line is cleared at the end');
});

t.test('off a terminal nothing is written', async (t) => {
  const f = fakeStream(false);
  t.equal(await withStatus('measuring', Promise.resolve('x'), f.stream), 'x');
  t.equal(f.text(), '');
});

t.test('a failure still erases the line and rethrows', async (t) => {
  const f = fakeStream(true);
  await t.rejects(withStatus('measuring', Promise.reject(new Error('boom')), f.stream), /boom/);
  t.ok(f.text().endsWith('\r\x1b[2K'));
});
