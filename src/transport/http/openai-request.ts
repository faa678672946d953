/**
 * The body of POST /v1/chat/completions, checked field by field: what edgellm honours becomes a
 * ChatRequest; fields that change nothing here (user, metadata, an empty tools list) are accepted;
 * anything this node cannot honour (n > 1, tools, JSON mode) is refused with an error that names the
 * field (OpenAI's `param`), as is any field OpenAI does not define. Image and audio content parts are
 * checked as the MQTT codec checks them (protocol/media-parts.ts) and kept as sent, for the upstream.
 */
import { EdgeError } from '../../errors.js';
import { topLogprobsOf } from '../../logprobs.js';
import { ADAPTER_WITH_MEDIA, checkContent, ContentPartError, hasMedia, MEDIA_DEFAULTS, type MediaLimits, type MessageContent } from '../../protocol/media-parts.js';
import { describeValue as kind } from '../../validation.js';

/** A checked request: the fields the local engine runs with. */
export interface ChatRequest {
  /** Absent: the node's first model. */
  model?: string;
  /** Text content, or (with an image or audio part) the parts as sent. */
  messages: { role: string; content: MessageContent }[];
  /** max_completion_tokens, or the older max_tokens. */
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  /** Not OpenAI's, but vLLM's and llama.cpp's servers take them too. */
  top_k?: number;
  min_p?: number;
  presence_penalty?: number;
  frequency_penalty?: number;
  seed?: number;
  stop?: string[];
  /** Per generated token its log-probability, and top_logprobs (0..20) alternatives. */
  logprobs?: boolean;
  top_logprobs?: number;
  stream: boolean;
  /** stream_options.include_usage: one more chunk with the usage before [DONE]. */
  include_usage: boolean;
  /** OpenAI's end-user id: the key a model name with A/B variants sticks to (else the header x-edgellm-device). */
  user?: string;
  /** Not OpenAI's: for a model name with A/B variants, the variant to run instead of the user's own. */
  variant?: string;
  /** Not OpenAI's: a LoRA adapter of the model (config adapters.MODEL), also asked as model "MODEL+ADAPTER". */
  adapter?: string;
}

/** A refusal: `param` is the field at fault (OpenAI's error.param), `code` OpenAI's error.code when it has one. */
export class RequestFieldError extends Error {
  constructor(
    message: string,
    readonly param: string | null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = 'RequestFieldError';
  }
}

/** Most stop strings one request may give (the engine's and the MQTT protocol's limit). */
const MAX_STOP = 16;

/** Fields that change nothing on this node, accepted whatever their value (type-checked where it matters). */
const HARMLESS = new Set(['metadata', 'store', 'service_tier', 'parallel_tool_calls', 'safety_identifier', 'prompt_cache_key']);

/** Fields accepted only with a value that asks for nothing this node lacks. */
const ONLY_WHEN_OFF: Record<string, { off: (v: unknown) => boolean; why: string }> = {
  n: { off: (v) => v === 1, why: 'must be 1: this server returns one choice per request (send several requests for several answers)' },
  logit_bias: { off: (v) => isObject(v) && Object.keys(v).length === 0, why: 'is not supported: this server cannot bias tokens (send {} or leave it out)' },
  tools: { off: (v) => Array.isArray(v) && v.length === 0, why: 'is not supported: this server does not call tools (send [] or leave it out)' },
  tool_choice: { off: (v) => v === 'none', why: 'is not supported: this server does not call tools (send "none" or leave it out)' },
  functions: { off: (v) => Array.isArray(v) && v.length === 0, why: 'is not supported: this server does not call functions' },
  function_call: { off: (v) => v === 'none', why: 'is not supported: this server does not call functions' },
  response_format: {
    off: (v) => isObject(v) && v.type === 'text' && Object.keys(v).length === 1,
    why: 'is not supported beyond {"type": "text"}: this server has no JSON mode or structured outputs',
  },
  modalities: {
    off: (v) => Array.isArray(v) && v.length === 1 && v[0] === 'text',
    why: 'must be ["text"]: this server answers with text only',
  },
  audio: { off: () => false, why: 'is not supported: this server answers with text only' },
  prediction: { off: () => false, why: 'is not supported: this server has no predicted outputs' },
  web_search_options: { off: () => false, why: 'is not supported: this server cannot search the web' },
  reasoning_effort: { off: () => false, why: 'is not supported: the local models have no reasoning effort setting' },
  verbosity: { off: () => false, why: 'is not supported: the local models have no verbosity setting' },
};

const HONOURED = new Set([
  'model',
  'messages',
  'max_tokens',
  'max_completion_tokens',
  'temperature',
  'top_p',
  'top_k',
  'min_p',
  'presence_penalty',
  'frequency_penalty',
  'seed',
  'stop',
  'stream',
  'stream_options',
  'logprobs',
  'top_logprobs',
  'user',
  'variant',
  'adapter',
]);

/** Message fields accepted besides role and content (name, and what an assistant turn echoes back). */
const MESSAGE_FIELDS = new Set(['role', 'content', 'name', 'refusal', 'tool_calls', 'tool_call_id', 'audio', 'function_call']);
/** OpenAI's "developer" role is its newer name for "system". */
const ROLES: Record<string, string> = { system: 'system', developer: 'system', user: 'user', assistant: 'assistant', tool: 'tool' };

/**
 * Checks a parsed JSON body (and the x-edgellm-device header); throws RequestFieldError on the first
 * field it cannot take. `media`: multimodal.* (image and audio parts).
 */
export function parseChatRequest(body: unknown, deviceHeader?: string | string[], media: Readonly<MediaLimits> = MEDIA_DEFAULTS): ChatRequest {
  if (!isObject(body)) {
    throw new RequestFieldError(`the body must be a JSON object such as {"model": "...", "messages": [{"role": "user", "content": "Hello"}]}, got ${kind(body)}`, null);
  }
  for (const [key, value] of Object.entries(body)) {
    if (HONOURED.has(key) || HARMLESS.has(key)) continue;
    const rule = ONLY_WHEN_OFF[key];
    if (rule === undefined) throw new RequestFieldError(`unrecognized request argument supplied: ${key}`, key);
    if (value !== null && !rule.off(value)) throw new RequestFieldError(`${key} ${rule.why}`, key);
  }
  const r: ChatRequest = { messages: messagesOf(body.messages, media), stream: false, include_usage: false };

  const model = opt(body, 'model');
  if (model !== undefined) {
    if (typeof model !== 'string' || model === '') throw new RequestFieldError(`model must be a non-empty string, got ${kind(model)}`, 'model');
    r.model = model;
  }
  for (const key of ['user', 'variant', 'adapter'] as const) {
    const v = opt(body, key);
    if (v === undefined) continue;
    if (typeof v !== 'string' || v === '') throw new RequestFieldError(`${key} must be a non-empty string, got ${kind(v)}`, key);
    r[key] = v;
  }
  // "MODEL+ADAPTER": the base model with one of its LoRA adapters (what a client that sends only model can ask).
  const plus = r.model?.indexOf('+') ?? -1;
  if (r.model !== undefined && plus >= 0) {
    const [base, adapter] = [r.model.slice(0, plus), r.model.slice(plus + 1)];
    if (base === '' || adapter === '') throw new RequestFieldError(`model "${r.model}" must be MODEL or MODEL+ADAPTER, both parts named`, 'model');
    if (r.adapter !== undefined && r.adapter !== adapter) {
      throw new RequestFieldError(`model "${r.model}" names adapter "${adapter}" but adapter is "${r.adapter}": name it once`, 'adapter');
    }
    r.model = base;
    r.adapter = adapter;
  }
  if (r.adapter !== undefined && hasMedia(r.messages)) throw new RequestFieldError(ADAPTER_WITH_MEDIA, 'adapter');
  // Stickiness of A/B variants: the body's user, else the x-edgellm-device header, else one key for all.
  if (r.user === undefined && typeof deviceHeader === 'string' && deviceHeader !== '') r.user = deviceHeader;
  const maxTokens = whole(body, 'max_tokens', 1);
  const maxCompletion = whole(body, 'max_completion_tokens', 1);
  if (maxTokens !== undefined && maxCompletion !== undefined && maxTokens !== maxCompletion) {
    throw new RequestFieldError(
      `max_tokens (${maxTokens}) and max_completion_tokens (${maxCompletion}) disagree: send only max_completion_tokens`,
      'max_tokens',
    );
  }
  const max = maxCompletion ?? maxTokens;
  if (max !== undefined) r.max_tokens = max;
  setIf(r, 'temperature', number(body, 'temperature', 0, 2));
  const topP = number(body, 'top_p', 0, 1);
  // The engine's nucleus needs some probability mass: 0 is refused here, not after queueing.
  if (topP === 0) throw new RequestFieldError('top_p must be a number above 0, at most 1 (1 = off), got 0', 'top_p');
  setIf(r, 'top_p', topP);
  setIf(r, 'top_k', whole(body, 'top_k', 0));
  setIf(r, 'min_p', number(body, 'min_p', 0, 1));
  setIf(r, 'presence_penalty', number(body, 'presence_penalty', -2, 2));
  setIf(r, 'frequency_penalty', number(body, 'frequency_penalty', -2, 2));
  setIf(r, 'seed', whole(body, 'seed', 0, 4294967295));
  const stop = stopOf(opt(body, 'stop'));
  if (stop !== undefined) r.stop = stop;
  try {
    const top = topLogprobsOf({ logprobs: opt(body, 'logprobs') as boolean, top_logprobs: opt(body, 'top_logprobs') as number });
    if (top !== undefined) Object.assign(r, { logprobs: true, top_logprobs: top });
    if (r.logprobs && hasMedia(r.messages)) {
      throw new RequestFieldError('logprobs come from the local model only, and a request with image or audio parts is answered by the upstream: drop logprobs', 'logprobs');
    }
  } catch (err) {
    if (!(err instanceof EdgeError)) throw err;
    throw new RequestFieldError(err.message, err.message.startsWith('top_logprobs') ? 'top_logprobs' : 'logprobs', err.code);
  }

  const stream = opt(body, 'stream');
  if (stream !== undefined) {
    if (typeof stream !== 'boolean') throw new RequestFieldError(`stream must be true or false, got ${kind(stream)}`, 'stream');
    r.stream = stream;
  }
  const streamOptions = opt(body, 'stream_options');
  if (streamOptions !== undefined) {
    if (!r.stream) throw new RequestFieldError('stream_options is only allowed when stream is true', 'stream_options');
    if (!isObject(streamOptions)) throw new RequestFieldError(`stream_options must be an object, got ${kind(streamOptions)}`, 'stream_options');
    for (const [k, v] of Object.entries(streamOptions)) {
      if (k === 'include_usage') {
        if (v !== null && typeof v !== 'boolean') throw new RequestFieldError(`stream_options.include_usage must be true or false, got ${kind(v)}`, 'stream_options.include_usage');
        r.include_usage = v === true;
      } else if (k !== 'include_obfuscation') {
        throw new RequestFieldError(`unrecognized request argument supplied: stream_options.${k}`, `stream_options.${k}`);
      }
    }
  }
  return r;
}

function messagesOf(value: unknown, media: Readonly<MediaLimits>): ChatRequest['messages'] {
  if (value === undefined || value === null) {
    throw new RequestFieldError('messages is missing: send the chat as "messages": [{"role": "user", "content": "..."}]', 'messages');
  }
  if (!Array.isArray(value)) throw new RequestFieldError(`messages must be a list of {role, content}, got ${kind(value)}`, 'messages');
  if (value.length === 0) throw new RequestFieldError('messages is empty: a chat needs at least one message', 'messages');
  return value.map((m: unknown, i) => {
    const at = `messages[${i}]`;
    if (!isObject(m)) throw new RequestFieldError(`${at} must be an object {role, content}, got ${kind(m)}`, at);
    for (const k of Object.keys(m)) {
      if (!MESSAGE_FIELDS.has(k)) throw new RequestFieldError(`unrecognized request argument supplied: ${at}.${k}`, `${at}.${k}`);
    }
    const role = typeof m.role === 'string' ? ROLES[m.role] : undefined;
    if (role === undefined) {
      throw new RequestFieldError(`${at}.role must be one of ${Object.keys(ROLES).join(', ')}, got ${kind(m.role)}`, `${at}.role`);
    }
    if (Array.isArray(m.tool_calls) ? m.tool_calls.length > 0 : m.tool_calls !== undefined && m.tool_calls !== null) {
      throw new RequestFieldError(`${at}.tool_calls is not supported: this server does not call tools`, `${at}.tool_calls`);
    }
    if (m.function_call !== undefined && m.function_call !== null) {
      throw new RequestFieldError(`${at}.function_call is not supported: this server does not call functions`, `${at}.function_call`);
    }
    try {
      return { role, content: checkContent(m.content, at, media) };
    } catch (err) {
      if (err instanceof ContentPartError) throw new RequestFieldError(err.message, err.param, err.code);
      throw err;
    }
  });
}

function stopOf(value: unknown): string[] | undefined {
  if (value === undefined) return undefined;
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || !list.every((s) => typeof s === 'string')) {
    throw new RequestFieldError(`stop must be a string or a list of strings, got ${kind(value)}`, 'stop');
  }
  if (list.length > MAX_STOP) throw new RequestFieldError(`stop holds ${list.length} strings; this server takes at most ${MAX_STOP}`, 'stop');
  if (list.some((s) => s === '')) throw new RequestFieldError('stop strings must not be empty', 'stop');
  return list.length === 0 ? undefined : (list as string[]);
}

/** The field's value; null counts as absent, as OpenAI's own clients send it. */
function opt(body: Record<string, unknown>, key: string): unknown {
  const v = body[key];
  return v === null ? undefined : v;
}

function number(body: Record<string, unknown>, key: string, min: number, max: number): number | undefined {
  const v = opt(body, key);
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
    throw new RequestFieldError(`${key} must be a number from ${min} to ${max}, got ${kind(v)}`, key);
  }
  return v;
}

function whole(body: Record<string, unknown>, key: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const v = opt(body, key);
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
    throw new RequestFieldError(`${key} must be a whole number ${range}, got ${kind(v)}`, key);
  }
  return v;
}

function setIf<K extends keyof ChatRequest>(r: ChatRequest, key: K, value: ChatRequest[K] | undefined): void {
  if (value !== undefined) r[key] = value;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
