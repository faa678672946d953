/**
 * The wire format: the request schema (one definition gives the type and the error messages) and the
 * reply messages (chunk, done, embeddings, error).
 */
import { isUtf8 } from 'node:buffer';
import { z } from 'zod';
import { EdgeError, type ErrorCode } from '../errors.js';
import { topLogprobsOf, type TokenLogprob } from '../logprobs.js';
import { describeIssues } from '../validation.js';
import { ADAPTER_WITH_MEDIA, checkContent, ContentPartError, hasMedia, MEDIA_DEFAULTS, textOf, type MediaLimits, type MessageContent } from './media-parts.js';
import { isPublishableTopic } from './topics.js';

const num = (what: string) => z.number({ error: `must be ${what}` });
const whole = (what: string) => num(what).int(`must be ${what}`);

/** With the u flag, a surrogate range matches only surrogates that are not half of a pair. */
const loneSurrogate = /[\uD800-\uDFFF]/u;
/**
 * Text a model reads: JSON's "\ud800" escapes can spell lone surrogates, which UTF-8 cannot carry;
 * refused rather than silently replaced with U+FFFD.
 */
const unicodeText = () =>
  z.string({ error: 'must be text' }).refine((s) => !loneSurrogate.test(s), 'must be valid Unicode (no lone surrogate escapes such as "\\ud800")');

const chatMessage = z
  .object(
    {
      role: unicodeText().min(1, 'must not be empty'),
      // Text, or OpenAI's content parts (text, image_url, input_audio): checked part by part after
      // the schema (media-parts.ts), as the OpenAI endpoint checks them.
      content: z.union([z.string(), z.array(z.unknown())], { error: 'must be text or a list of content parts' }),
    },
    { error: 'must be an object {role, content}' },
  )
  .strict();

/** Most inputs one embedding request may carry (OpenAI's limit). */
export const MAX_EMBED_INPUTS = 2048;
/** Fields that only a generation reads: an embedding request (op "embed") refuses them. */
const GENERATION_ONLY = ['prompt', 'messages', 'max_tokens', 'temperature', 'top_p', 'top_k', 'min_p', 'seed', 'stop', 'stream', 'adapter'] as const;

export const requestSchema = z
  .object({
    id: z.string({ error: 'must be text' }).min(1, 'must not be empty').max(200, 'must be at most 200 characters'),
    /** "generate" (the default: prompt or messages in, text out) or "embed" (input in, vectors out). */
    op: z.enum(['generate', 'embed'], { error: 'must be "generate" or "embed"' }).optional(),
    /** op "embed": a text, or a list of texts each embedded on its own. */
    input: z
      .union([unicodeText().min(1, 'must not be empty'), z.array(unicodeText().min(1, 'must not be empty')).min(1, 'must hold at least one text')], {
        error: 'must be a text or a list of texts',
      })
      .optional(),
    prompt: unicodeText().optional(),
    messages: z.array(chatMessage, { error: 'must be a list of {role, content}' }).min(1, 'must hold at least one message').optional(),
    model: z.string({ error: 'must be text' }).min(1, 'must not be empty').optional(),
    /** For a model name with A/B variants: the variant to run instead of the device's own (E_UNKNOWN_VARIANT when it has none of that name). */
    variant: z.string({ error: 'must be text' }).min(1, 'must not be empty').optional(),
    /** A LoRA adapter of the local model (config adapters.MODEL): runs locally with it (E_UNKNOWN_ADAPTER when the model has none of that name). */
    adapter: z.string({ error: 'must be text' }).min(1, 'must not be empty').optional(),
    max_tokens: whole('a whole number >= 1').min(1, 'must be a whole number >= 1').optional(),
    temperature: num('a number from 0 to 2').min(0, 'must be a number from 0 to 2').max(2, 'must be a number from 0 to 2').optional(),
    top_p: num('a number above 0, at most 1').gt(0, 'must be a number above 0, at most 1 (1 = off)').max(1, 'must be a number above 0, at most 1 (1 = off)').optional(),
    top_k: whole('a whole number >= 0').min(0, 'must be a whole number >= 0').optional(),
    min_p: num('a number from 0 to 1').min(0, 'must be a number from 0 to 1').max(1, 'must be a number from 0 to 1').optional(),
    seed: whole('a whole number from 0 to 4294967295').min(0, 'must be a whole number from 0 to 4294967295').max(4294967295, 'must be a whole number from 0 to 4294967295').optional(),
    stop: z.array(unicodeText().min(1, 'must not be empty'), { error: 'must be a list of strings' }).max(16, 'must hold at most 16 strings').optional(),
    stream: z.boolean({ error: 'must be true or false' }).optional(),
    route: z.enum(['auto', 'local', 'cloud'], { error: 'must be one of auto, local, cloud' }).optional(),
    local_only: z.boolean({ error: 'must be true or false' }).optional(),
    priority: whole('a whole number from 0 (lowest) to 9').min(0, 'must be a whole number from 0 (lowest) to 9').max(9, 'must be a whole number from 0 (lowest) to 9').optional(),
    deadline_ms: whole('a whole number of milliseconds >= 1').min(1, 'must be a whole number of milliseconds >= 1').optional(),
    reply_to: z.string({ error: 'must be text' }).refine(isPublishableTopic, 'must be a topic name without wildcards').optional(),
    trace: z.boolean({ error: 'must be true or false' }).optional(),
    // Ranges are checked after the schema, by the one check every endpoint shares (E_BAD_LOGPROBS).
    logprobs: z.boolean({ error: 'must be true or false' }).optional(),
    top_logprobs: num('a whole number from 0 to 20').optional(),
  })
  .strict()
  .superRefine((r, ctx) => {
    if (r.op === 'embed') {
      if (r.input === undefined) ctx.addIssue({ code: 'custom', path: [], message: 'an embedding request (op "embed") needs "input": a text or a list of texts' });
      // Here rather than on the list: a union reports a too-long list as "not a text or a list".
      if (Array.isArray(r.input) && r.input.length > MAX_EMBED_INPUTS) {
        ctx.addIssue({ code: 'custom', path: ['input'], message: `must hold at most ${MAX_EMBED_INPUTS} texts, got ${r.input.length}` });
      }
      for (const k of GENERATION_ONLY) {
        if (r[k] !== undefined) ctx.addIssue({ code: 'custom', path: [k], message: 'is not read by an embedding request (op "embed"): leave it out' });
      }
      if (r.route === 'cloud') ctx.addIssue({ code: 'custom', path: ['route'], message: 'must be "auto" or "local" for an embedding request: embeddings are computed on this node' });
      return;
    }
    if (r.input !== undefined) ctx.addIssue({ code: 'custom', path: ['input'], message: 'is read by embedding requests only: add "op": "embed", or send "prompt" to generate' });
    if ((r.prompt === undefined) === (r.messages === undefined)) {
      ctx.addIssue({ code: 'custom', path: [], message: 'a request must have exactly one of "prompt" or "messages"' });
    }
  });

/** A request as validated: a message's content is text, or a list of parts when it has an image or audio part. */
export type WireRequest = Omit<z.infer<typeof requestSchema>, 'messages'> & { messages?: { role: string; content: MessageContent }[] | undefined };

export type Decoded =
  | { ok: true; request: WireRequest }
  /** id is echoed in the error reply when the payload had a usable one. */
  | { ok: false; id: string | null; replyTo: string | undefined; code: ErrorCode; message: string };

/** What decodeRequest enforces before it parses anything. */
export interface DecodeLimits {
  /** limits.max_payload_bytes: larger payloads are refused unread (E_TOO_LARGE). */
  maxPayloadBytes: number;
  /** multimodal.*: image and audio parts (default MEDIA_DEFAULTS). */
  media?: Readonly<MediaLimits> | undefined;
}

/**
 * An error reply names at most this many problems: a payload of a million bad list entries must not
 * become a reply of a million sentences.
 */
const MAX_PROBLEMS = 8;
/** Longest sentence of an error reply, in characters (an unknown field's name may be huge). */
const MAX_PROBLEM_CHARS = 300;

/**
 * Parses and validates a request payload; every failure says which field and what it takes. The size
 * is checked before anything is parsed, and text that is not valid UTF-8 is refused, never repaired
 * (a replaced byte would silently change the prompt).
 */
export function decodeRequest(payload: Buffer, limits: DecodeLimits): Decoded {
  const refuse = (code: ErrorCode, message: string, id: string | null = null, replyTo?: string): Decoded => ({ ok: false, id, replyTo, code, message });
  if (payload.length > limits.maxPayloadBytes) {
    return refuse('E_TOO_LARGE', `the request is ${payload.length} bytes; the limit is ${limits.maxPayloadBytes} (limits.max_payload_bytes): send a shorter prompt`);
  }
  if (!isUtf8(payload)) {
    return refuse('E_BAD_REQUEST', `the payload is not valid UTF-8 (at byte ${firstInvalidUtf8(payload)}): send JSON text encoded as UTF-8`);
  }
  let body: unknown;
  try {
    body = JSON.parse(payload.toString('utf8'));
  } catch {
    return refuse('E_BAD_REQUEST', 'the payload is not JSON: send a JSON object such as {"id": "1", "prompt": "..."}');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return refuse('E_BAD_REQUEST', 'the payload must be a JSON object such as {"id": "1", "prompt": "..."}');
  }
  const fields = body as Record<string, unknown>;
  // Echoed only when it could be a valid id: a megabyte "id" is not sent back.
  const id = typeof fields.id === 'string' && fields.id !== '' && fields.id.length <= 200 ? fields.id : null;
  const replyTo = typeof fields.reply_to === 'string' && isPublishableTopic(fields.reply_to) ? fields.reply_to : undefined;
  if (fields.id === undefined) {
    return refuse('E_BAD_REQUEST', 'field "id" is missing: every request needs a string id, unique per device', null, replyTo);
  }
  const parsed = requestSchema.safeParse(body);
  if (!parsed.success) {
    const problems = describeIssues(parsed.error.issues, body, 'field').map((p) => (p.length > MAX_PROBLEM_CHARS ? `${p.slice(0, MAX_PROBLEM_CHARS)}...` : p));
    const shown = problems.slice(0, MAX_PROBLEMS);
    if (problems.length > shown.length) shown.push(`and ${problems.length - shown.length} more problems`);
    return refuse('E_BAD_REQUEST', shown.join('; '), id, replyTo);
  }
  const { messages, ...fields0 } = parsed.data;
  const r: WireRequest = { ...fields0, ...(messages !== undefined ? { messages: [] } : {}) };
  for (const [i, m] of (messages ?? []).entries()) {
    let content: MessageContent;
    try {
      content = checkContent(m.content, `messages[${i}]`, limits.media ?? MEDIA_DEFAULTS);
    } catch (err) {
      if (err instanceof ContentPartError) return refuse(err.code, err.message, id, replyTo);
      throw err;
    }
    if (loneSurrogate.test(textOf(content))) {
      return refuse('E_BAD_REQUEST', `field "messages[${i}].content" must be valid Unicode (no lone surrogate escapes such as "\\ud800")`, id, replyTo);
    }
    r.messages!.push({ role: m.role, content });
  }
  if (hasMedia(r.messages) && r.adapter !== undefined) return refuse('E_BAD_REQUEST', ADAPTER_WITH_MEDIA, id, replyTo);
  if (hasMedia(r.messages) && r.logprobs === true) {
    return refuse('E_BAD_LOGPROBS', 'logprobs come from the local model only, and a request with image or audio parts is answered by the upstream: drop logprobs', id, replyTo);
  }
  try {
    if (topLogprobsOf(r) !== undefined && r.route === 'cloud') {
      return refuse('E_BAD_LOGPROBS', 'logprobs come from the local model only (the cloud route relays text): drop route "cloud" or logprobs', id, replyTo);
    }
  } catch (err) {
    if (err instanceof EdgeError) return refuse(err.code, err.message, id, replyTo);
    throw err;
  }
  return { ok: true, request: r };
}

/**
 * Offset of the first byte sequence that is not UTF-8 (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF, no cut-off character), or -1. Only called once isUtf8 has said no.
 */
function firstInvalidUtf8(b: Buffer): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i]!;
    if (c < 0x80) {
      i++;
      continue;
    }
    const more = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : 0;
    if (more === 0) return i;
    // The second byte's range is narrower after E0 (overlong), ED (surrogates), F0 (overlong), F4 (> U+10FFFF).
    const lo = c === 0xe0 ? 0xa0 : c === 0xf0 ? 0x90 : 0x80;
    const hi = c === 0xed ? 0x9f : c === 0xf4 ? 0x8f : 0xbf;
    for (let k = 1; k <= more; k++) {
      const d = b[i + k];
      if (d === undefined || d < (k === 1 ? lo : 0x80) || d > (k === 1 ? hi : 0xbf)) return i;
    }
    i += more + 1;
  }
  return -1;
}

/** The final answer's fields besides id and type. */
export interface DoneFields {
  text: string;
  finish_reason: 'stop' | 'length' | 'cancelled';
  usage: { prompt_tokens: number; completion_tokens: number };
  /** Where it was answered: this node's model, or the upstream. */
  route: 'local' | 'cloud';
  /** Why, in a few words: "fits local model x", "prompt 5120 tokens > max_local_prompt_tokens 2048". */
  route_reason: string;
  /** Present (true) only when the upstream failed mid-request and the local model answered instead. */
  fallback?: true;
  /** What went wrong upstream: "upstream failed (HTTP 500)". */
  fallback_reason?: string;
  cached: boolean;
  /** With logprobs: per generated token (OpenAI's choices[].logprobs). */
  logprobs?: { content: TokenLogprob[] };
  model: string;
  /** For a model name with A/B variants: the variant that answered (the model it routes to). */
  variant?: string;
  /** The LoRA adapter the model answered with (the request's `adapter`). */
  adapter?: string;
  node: string;
  timings: { queue_ms: number; ttft_ms: number; total_ms: number; tokens_per_s: number };
  /** The request's W3C trace id (its traceparent's, or one made at intake): 32 hex digits. */
  trace_id: string;
  /** Only when the request asked with `trace: true`. */
  trace?: RequestTrace;
}

/** How a request was served, step by step (docs/protocol.md, "Tracing"). Times in milliseconds. */
export interface RequestTrace {
  /** "cache" for an answer from the cache (then no timings: nothing ran). */
  route: 'local' | 'cloud' | 'cache';
  route_reason: string;
  /** For a model name with A/B variants: the variant that answered. */
  variant?: string;
  /** hit; miss (looked up, then generated); bypass (not looked up: not deterministic, cache off, or cloud). */
  cache: 'hit' | 'miss' | 'bypass';
  /** From arrival until the engine started its prompt (the daemon's queue and the decode loop's). */
  queue_wait_ms: number;
  /** Evaluating the prompt (local runs). */
  prefill_ms?: number;
  /** Between consecutive generated tokens (local runs with 2+ tokens): median and 95th percentile. */
  token_ms?: { p50: number; p95: number; tokens: number };
  /** How many sequences each decode step that gave this request a token advanced together, and how many such steps. */
  batch_sizes?: { size: number; steps: number }[];
}

/** With logprobs, `tokens` are the generated tokens that arrived since the previous chunk. */
export const chunkMessage = (id: string, seq: number, text: string, tokens?: TokenLogprob[]) =>
  JSON.stringify({ id, type: 'chunk', seq, text, ...(tokens ? { logprobs: { content: tokens } } : {}) });

/**
 * The upstream failed after streaming `discarded_chars` characters: the chunks so far are void, and
 * the local model's chunks follow from its beginning (seq keeps counting).
 */
export const fallbackMessage = (id: string, seq: number, reason: string, discardedChars: number) =>
  JSON.stringify({ id, type: 'fallback', seq, route: 'local', reason, discarded_chars: discardedChars });

/**
 * A request taken back after a restart of the node whose new answer may not continue the text the
 * device holds (`discarded_chars` UTF-16 units): that text is void, and the new answer's chunks follow
 * from its beginning (seq keeps counting).
 */
export const restartMessage = (id: string, seq: number, reason: string, discardedChars: number) =>
  JSON.stringify({ id, type: 'restart', seq, reason, discarded_chars: discardedChars });

export const doneMessage = (id: string, f: DoneFields) => JSON.stringify({ id, type: 'done', ...f });

/** The answer to an embedding request: one unit vector per input, in order. */
export interface EmbeddingsFields {
  embeddings: number[][];
  usage: { prompt_tokens: number };
  model: string;
  node: string;
  timings: { queue_ms: number; total_ms: number };
}

export const embeddingsMessage = (id: string, f: EmbeddingsFields) => JSON.stringify({ id, type: 'embeddings', ...f });

/** The texts of an embedding request, one per input. */
export const embedInputs = (r: Pick<WireRequest, 'input'>): string[] => (r.input === undefined ? [] : typeof r.input === 'string' ? [r.input] : r.input);

export const errorMessage = (id: string | null, code: ErrorCode, message: string, traceId?: string) =>
  JSON.stringify({ id, type: 'error', error: { code, message }, ...(traceId !== undefined ? { trace_id: traceId } : {}) });
