// Chat templates: the model's own template (phi-3 from its GGUF), well-known templates, the
// ChatML fallback, the stop tokens of a chat turn, and how bad messages and templates are refused.
import t from 'tap';
import { join } from 'node:path';
import { readGgufInfo } from '../src/engine/gguf.js';
import { EdgeError } from '../src/errors.js';
import {
  chatStopStrings, chatStopTokens, renderChat, renderChatFor, validateMessages, type ChatMessage,
} from '../src/engine/chat.js';
import { Tokenizer } from '../src/engine/tokenizer/index.js';
import { requireModels } from './fixtures/paths.js';
import { ggufTokenizer, vocabDir } from './fixtures/tokenizer-data.js';

const conversation: ChatMessage[] = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Hi!' },
  { role: 'assistant', content: 'Hello.' },
  { role: 'user', content: 'What is 2+2?' },
];

// Qwen2-Instruct's template (ChatML with a default system message).
const QWEN2 =
  "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}" +
  "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}" +
  "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

// Meta-Llama-3-Instruct's template: `| trim` binds tighter than `+`.
const LLAMA3 =
  "{% set loop_messages = messages %}{% for message in loop_messages %}" +
  "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}" +
  '{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}' +
  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

// Gemma-Instruct's template: no system role, strictly alternating user/model turns.
const GEMMA =
  "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" +
  "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
  "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}" +
  "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}";

function refusal(fn: () => unknown): EdgeError {
  try {
    fn();
  } catch (err) {
    if (err instanceof EdgeError) return err;
    throw err;
  }
  throw new Error('expected an EdgeError');
}

t.test("phi-3's own template renders the conversation as the model expects", async (t) => {
  if (!requireModels(t, 'phi-3 chat template')) return;
  const meta = readGgufInfo(join(vocabDir, 'ggml-vocab-phi-3.gguf')).metadata;
  const template = meta['tokenizer.chat_template'];
  t.type(template, 'string');
  const tk = ggufTokenizer(join('vocab', 'ggml-vocab-phi-3.gguf'));
  t.equal(tk.vocab.chatTemplate, template, 'the tokenizer carries the same template');
  // This template has no branch for system messages (they vanish) and always opens the
  // assistant turn after a user turn, with or without add_generation_prompt.
  const expected =
    '<s><|user|>\nHi!<|end|>\n<|assistant|>\nHello.<|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n';
  t.equal(renderChat(template as string, conversation, { bosToken: '<s>', eosToken: '</s>' }), expected);
  t.equal(renderChatFor(tk, conversation), expected, 'renderChatFor takes BOS/EOS from the tokenizer');
});

t.test("phi-3's chat ends at <|end|> and at EOS", async (t) => {
  if (!requireModels(t, 'phi-3 stop tokens')) return;
  const tk = ggufTokenizer(join('vocab', 'ggml-vocab-phi-3.gguf'));
  const stops = chatStopTokens(tk);
  t.ok(stops.includes(tk.eos), 'EOS ends a turn');
  t.ok(stops.includes(tk.vocab.tokenToId.get('<|end|>')!), '<|end|> ends a turn');
  t.notOk(stops.includes(tk.vocab.tokenToId.get('<|user|>')!), '<|user|> does not');
  t.same(stops, [...stops].sort((a, b) => a - b));
  t.same(chatStopStrings(tk), [], 'a model with a template needs no stop string');
});

t.test('the Qwen2 (ChatML) template adds its default system message only when there is none', async (t) => {
  t.equal(
    renderChat(QWEN2, conversation),
    '<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n' +
      '<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n',
  );
  t.equal(
    renderChat(QWEN2, [{ role: 'user', content: 'Hi!' }], { addGenerationPrompt: false }),
    '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n',
  );
});

t.test('the Llama-3 template writes BOS once, trims content and opens the assistant header', async (t) => {
  const messages: ChatMessage[] = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: '  Hi!\n' },
  ];
  t.equal(
    renderChat(LLAMA3, messages, { bosToken: '<|begin_of_text|>' }),
    '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>' +
      '<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>' +
      '<|start_header_id|>assistant<|end_header_id|>\n\n',
  );
});

t.test('the Gemma template maps assistant to model', async (t) => {
  t.equal(
    renderChat(GEMMA, conversation.slice(1), { bosToken: '<bos>' }),
    '<bos><start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n' +
      '<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n',
  );
});

t.test("a template's own refusal becomes E_MODEL_UNSUPPORTED with the template's words", async (t) => {
  const err = refusal(() => renderChat(GEMMA, conversation));
  t.equal(err.code, 'E_MODEL_UNSUPPORTED');
  t.match(err.message, /chat template/);
  t.match(err.message, /System role not supported/);
});

t.test('a template that does not parse is E_MODEL_UNSUPPORTED', async (t) => {
  const err = refusal(() => renderChat('{% for message in messages %}{{ message.content }}', conversation));
  t.equal(err.code, 'E_MODEL_UNSUPPORTED');
  t.match(err.message, /does not parse/);
});

t.test('without a template, the fallback is ChatML', async (t) => {
  const expected =
    '<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n' +
    '<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n';
  t.equal(renderChat(undefined, conversation), expected);
  t.equal(renderChat('  ', conversation), expected, 'a blank template counts as none');
  t.equal(
    renderChat(undefined, [{ role: 'user', content: 'Hi!' }], { addGenerationPrompt: false }),
    '<|im_start|>user\nHi!<|im_end|>\n',
  );
});

t.test('a model without a template stops chat turns at the string <|im_end|>', async (t) => {
  const tk = Tokenizer.fromMetadata({
    'tokenizer.ggml.model': 'llama',
    'tokenizer.ggml.tokens': ['<unk>', '<s>', '</s>', 'a'],
    'tokenizer.ggml.scores': new Float32Array([0, 0, 0, -1]),
    'tokenizer.ggml.token_type': new Int32Array([2, 3, 3, 1]),
  });
  t.same(chatStopTokens(tk), [2]);
  t.same(chatStopStrings(tk), ['<|im_end|>']);
  t.equal(renderChatFor(tk, [{ role: 'user', content: 'a' }]), '<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n');
});

t.test('bad messages are E_BAD_REQUEST naming the index and field', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    ['hello', /messages must be an array/],
    [[], /messages is empty/],
    [[{ role: 'user', content: 'a' }, null], /messages\[1\] must be an object/],
    [[{ role: 'user', content: 'a' }, { role: 'bot', content: 'b' }], /messages\[1\]\.role must be one of system, user, assistant, tool, got "bot"/],
    [[{ content: 'a' }], /messages\[0\]\.role must be one of .* got undefined/],
    [[{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 3 }], /messages\[2\]\.content must be a string, got number/],
    [[{ role: 'user' }], /messages\[0\]\.content must be a string, got undefined/],
  ];
  for (const [messages, want] of cases) {
    const err = refusal(() => renderChat(QWEN2, messages as ChatMessage[]));
    t.equal(err.code, 'E_BAD_REQUEST', String(want));
    t.match(err.message, want);
  }
});

t.test('validateMessages keeps extra fields for the template', async (t) => {
  const [m] = validateMessages([{ role: 'tool', content: '42', tool_call_id: 'c1' }]);
  t.same(m, { role: 'tool', content: '42', tool_call_id: 'c1' });
  t.equal(
    renderChat("{% for m in messages %}{{ m.tool_call_id }}={{ m.content }}{% endfor %}", [m!]),
    'c1=42',
  );
});
