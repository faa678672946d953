// The demo model `serve --demo` writes: the same file every time, one the engine runs, and a clear
// error when the state directory cannot hold it.
import t from 'tap';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { demoModelPath, ensureDemoModel } from '../../src/daemon/demo-model.js';
import { loadModel } from '../../src/engine/model.js';
import { EdgeError } from '../../src/errors.js';

const work = mkdtempSync(join(tmpdir(), 'edgellm-demo-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

t.test('the demo model is written once per state directory, byte for byte the same everywhere', async (t) => {
  const a = ensureDemoModel(join(work, 'a'));
  t.same(a, { path: demoModelPath(join(work, 'a')), created: true });
  t.same(ensureDemoModel(join(work, 'a')), { path: a.path, created: false }, 'kept on the next start');
  const b = ensureDemoModel(join(work, 'b'));
  t.equal(sha(b.path), sha(a.path), 'deterministic weights');
});

t.test('the engine runs it: prompts and chats tokenize, answers are words and end on their own', async (t) => {
  const model = await loadModel(ensureDemoModel(join(work, 'run')).path, { threads: 1, contextSize: 512 });
  t.teardown(() => model.close());
  const r = await model.generate({ prompt: 'Is the spindle too hot? ünïcödé 🙂', max_tokens: 300, seed: 1 }).result;
  t.equal(r.finish_reason, 'stop', `ended by the model after ${r.usage.completion_tokens} tokens`);
  t.match(r.text, /^( [a-z]+[.,!?]?)+$/, 'words from the vocabulary');
  const chat = await model.generate({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8, temperature: 0 }).result;
  t.ok(chat.usage.prompt_tokens > 2 && chat.text.trim() !== '', 'a chat through the default template');
});

t.test('a state directory that cannot hold it is an E_CONFIG naming the path and state_dir', async (t) => {
  const blocker = join(work, 'a-file');
  writeFileSync(blocker, 'not a directory');
  try {
    ensureDemoModel(blocker);
    t.fail('expected E_CONFIG');
  } catch (err) {
    t.ok(err instanceof EdgeError && err.code === 'E_CONFIG');
    t.match((err as Error).message, /cannot write the demo model to .*a-file\/models\/edgellm-demo\.gguf: .*set state_dir \(--state-dir\)/);
  }
});
