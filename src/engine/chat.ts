/**
 * Chat messages -> the prompt text a model was trained on, through the model's own Jinja chat
 * template (GGUF `tokenizer.chat_template`), rendered with @huggingface/jinja as transformers'
 * apply_chat_template does (trim_blocks and lstrip_blocks on).
 */
import { Template } from '@huggingface/jinja';
import { EdgeError } from '../errors.js';
import { NO_TOKEN, type Tokenizer } from './tokenizer/index.js';

export type ChatRole = 'system' | 'user' | 'assistant' | 'tool';

export const CHAT_ROLES: readonly ChatRole[] = ['system', 'user', 'assistant', 'tool'];

/** One turn. Extra fields (name, tool_call_id...) are passed to the template as they are. */
export interface ChatMessage {
  role: ChatRole;
  content: string;
  [field: string]: unknown;
}

export interface RenderChatOptions {
  /** End with the opening of an assistant turn, so the model writes the reply (default true). */
  addGenerationPrompt?: boolean;
  /** The text of the model's BOS token, for templates that write `{{ bos_token }}` (default ''). */
  bosToken?: string;
  /** The text of the model's EOS token, for templates that write `{{ eos_token }}` (default ''). */
  eosToken?: string;
}

/** The end-of-turn marker of the fallback format; a stop string when it is not a token of the model. */
export const FALLBACK_END_OF_TURN = '<|im_end|>';

/**
 * Renders `messages` with the model's chat template.
 *
 * When the model has no template (`template` undefined or blank), the fallback is ChatML, which is
 * also llama.cpp's default: each message becomes `<|im_start|>{role}\n{content}<|im_end|>\n`, and
 * the generation prompt is `<|im_start|>assistant\n`. Models without a template are usually base
 * models, for which these markers are plain text; generation should then stop at the string
 * FALLBACK_END_OF_TURN (see chatStopStrings).
 *
 * Templates that write `{{ bos_token }}` put BOS in the text: encode such a prompt with
 * `{ addBos: false, parseSpecial: true }`, or the model sees BOS twice.
 *
 * Throws EdgeError E_BAD_REQUEST for a malformed message (naming its index and field) and
 * E_MODEL_UNSUPPORTED when the template does not parse or fails on this conversation (many
 * templates refuse, say, a system message or roles that do not alternate; the message says why).
 */
export function renderChat(
  template: string | undefined,
  messages: readonly ChatMessage[],
  opts: RenderChatOptions = {},
): string {
  const checked = validateMessages(messages);
  const addGenerationPrompt = opts.addGenerationPrompt ?? true;
  if (template === undefined || template.trim() === '') return renderFallback(checked, addGenerationPrompt);
  const compiled = compile(template);
  try {
    return compiled.render({
      messages: checked,
      add_generation_prompt: addGenerationPrompt,
      bos_token: opts.bosToken ?? '',
      eos_token: opts.eosToken ?? '',
    });
  } catch (err) {
    throw new EdgeError(
      'E_MODEL_UNSUPPORTED',
      `the model's chat template failed on this conversation: ${errorText(err)} ` +
        '(the template decides which roles and orders it accepts; adjust the messages to fit it)',
      { cause: err },
    );
  }
}

/** renderChat with the tokenizer's template and its BOS/EOS texts. */
export function renderChatFor(
  tokenizer: Tokenizer,
  messages: readonly ChatMessage[],
  opts: { addGenerationPrompt?: boolean } = {},
): string {
  const text = (id: number) => (id === NO_TOKEN ? '' : tokenizer.tokenText(id));
  return renderChat(tokenizer.vocab.chatTemplate, messages, {
    addGenerationPrompt: opts.addGenerationPrompt ?? true,
    bosToken: text(tokenizer.bos),
    eosToken: text(tokenizer.eos),
  });
}

/**
 * The tokens that end an assistant turn: every end-of-generation token of the vocabulary (EOS,
 * EOT such as <|eot_id|> / <|im_end|> / <|end|>, EOM...), ascending.
 */
export function chatStopTokens(tokenizer: Tokenizer): number[] {
  return [...tokenizer.vocab.eog].sort((a, b) => a - b);
}

/**
 * Stop strings a chat needs besides its stop tokens: FALLBACK_END_OF_TURN when the model has no
 * template (so the ChatML fallback is used) and that marker is not one of its tokens; else none.
 */
export function chatStopStrings(tokenizer: Tokenizer): string[] {
  const template = tokenizer.vocab.chatTemplate;
  if (template !== undefined && template.trim() !== '') return [];
  return tokenizer.vocab.tokenToId.has(FALLBACK_END_OF_TURN) ? [] : [FALLBACK_END_OF_TURN];
}

/**
 * Checks chat messages from a request: a non-empty array of objects whose role is one of
 * CHAT_ROLES and whose content is a string. Throws EdgeError E_BAD_REQUEST naming the first
 * offending message and field.
 */
export function validateMessages(messages: unknown): ChatMessage[] {
  if (!Array.isArray(messages)) throw badRequest(`messages must be an array of {role, content}, got ${kind(messages)}`);
  if (messages.length === 0) throw badRequest('messages is empty: a chat needs at least one message');
  return messages.map((m: unknown, i) => {
    if (typeof m !== 'object' || m === null || Array.isArray(m)) {
      throw badRequest(`messages[${i}] must be an object {role, content}, got ${kind(m)}`);
    }
    const { role, content } = m as Record<string, unknown>;
    if (typeof role !== 'string' || !(CHAT_ROLES as readonly string[]).includes(role)) {
      throw badRequest(`messages[${i}].role must be one of ${CHAT_ROLES.join(', ')}, got ${describe(role)}`);
    }
    if (typeof content !== 'string') {
      throw badRequest(`messages[${i}].content must be a string, got ${kind(content)}`);
    }
    return { ...(m as Record<string, unknown>), role: role as ChatRole, content };
  });
}

function renderFallback(messages: ChatMessage[], addGenerationPrompt: boolean): string {
  let out = '';
  for (const m of messages) out += `<|im_start|>${m.role}\n${m.content}${FALLBACK_END_OF_TURN}\n`;
  if (addGenerationPrompt) out += '<|im_start|>assistant\n';
  return out;
}

// A process serves one or a few models: keep their parsed templates.
const compiled = new Map<string, Template>();
const MAX_COMPILED = 8;

function compile(template: string): Template {
  let t = compiled.get(template);
  if (t) return t;
  try {
    t = new Template(template);
  } catch (err) {
    throw new EdgeError(
      'E_MODEL_UNSUPPORTED',
      `the model's chat template (tokenizer.chat_template) does not parse: ${errorText(err)}; ` +
        'edgellm renders templates with @huggingface/jinja, which lacks some Jinja features',
      { cause: err },
    );
  }
  if (compiled.size >= MAX_COMPILED) compiled.delete(compiled.keys().next().value!);
  compiled.set(template, t);
  return t;
}

function badRequest(message: string): EdgeError {
  return new EdgeError('E_BAD_REQUEST', message);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function kind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : typeof v;
}

function describe(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : kind(v);
}
