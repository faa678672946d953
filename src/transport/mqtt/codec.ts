/**
 * The wire format: the request schema (one definition gives the type and the error messages) and the
 * reply messages (chunk, done, error).
 */
import { z } from 'zod';
import type { ErrorCode } from '../../errors.js';
import { describeIssues } from '../../validation.js';
import { isPublishableTopic } from './topics.js';

const num = (what: string) => z.number({ error: `must be ${what}` });
const whole = (what: string) => num(what).int(`must be ${what}`);

const chatMessage = z
  .object({
    role: z.string({ error: 'must be text' }).min(1, 'must not be empty'),
    content: z.string({ error: 'must be text' }),
  })
  .strict();

export const requestSchema = z
  .object({
    id: z.string({ error: 'must be text' }).min(1, 'must not be empty').max(200, 'must be at most 200 characters'),
    prompt: z.string({ error: 'must be text' }).optional(),
    messages: z.array(chatMessage, { error: 'must be a list of {role, content}' }).min(1, 'must hold at least one message').optional(),
    model: z.string({ error: 'must be text' }).min(1, 'must not be empty').optional(),
    max_tokens: whole('a whole number >= 1').min(1, 'must be a whole number >= 1').optional(),
    temperature: num('a number from 0 to 2').min(0, 'must be a number from 0 to 2').max(2, 'must be a number from 0 to 2').optional(),
    top_p: num('a number from 0 to 1').min(0, 'must be a number from 0 to 1').max(1, 'must be a number from 0 to 1').optional(),
    top_k: whole('a whole number >= 0').min(0, 'must be a whole number >= 0').optional(),
    min_p: num('a number from 0 to 1').min(0, 'must be a number from 0 to 1').max(1, 'must be a number from 0 to 1').optional(),
    seed: whole('a whole number from 0 to 4294967295').min(0, 'must be a whole number from 0 to 4294967295').max(4294967295, 'must be a whole number from 0 to 4294967295').optional(),
    stop: z.array(z.string({ error: 'must be text' }).min(1, 'must not be empty'), { error: 'must be a list of strings' }).max(16, 'must hold at most 16 strings').optional(),
    stream: z.boolean({ error: 'must be true or false' }).optional(),
    route: z.enum(['auto', 'local', 'cloud'], { error: 'must be one of auto, local, cloud' }).optional(),
    local_only: z.boolean({ error: 'must be true or false' }).optional(),
    priority: whole('a whole number from 0 (lowest) to 9').min(0, 'must be a whole number from 0 (lowest) to 9').max(9, 'must be a whole number from 0 (lowest) to 9').optional(),
    deadline_ms: whole('a whole number of milliseconds >= 1').min(1, 'must be a whole number of milliseconds >= 1').optional(),
    reply_to: z.string({ error: 'must be text' }).refine(isPublishableTopic, 'must be a topic name without wildcards').optional(),
  })
  .strict()
  .superRefine((r, ctx) => {
    if ((r.prompt === undefined) === (r.messages === undefined)) {
      ctx.addIssue({ code: 'custom', path: [], message: 'a request must have exactly one of "prompt" or "messages"' });
    }
  });

export type WireRequest = z.infer<typeof requestSchema>;

export type Decoded =
  | { ok: true; request: WireRequest }
  /** id is echoed in the error reply when the payload had a usable one. */
  | { ok: false; id: string | null; replyTo: string | undefined; code: ErrorCode; message: string };

/** Parses and validates a request payload; every failure says which field and what it takes. */
export function decodeRequest(payload: Buffer): Decoded {
  let body: unknown;
  try {
    body = JSON.parse(payload.toString('utf8'));
  } catch {
    return { ok: false, id: null, replyTo: undefined, code: 'E_BAD_REQUEST', message: 'the payload is not JSON: send a JSON object such as {"id": "1", "prompt": "..."}' };
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return { ok: false, id: null, replyTo: undefined, code: 'E_BAD_REQUEST', message: 'the payload must be a JSON object such as {"id": "1", "prompt": "..."}' };
  }
  const fields = body as Record<string, unknown>;
  const id = typeof fields.id === 'string' && fields.id !== '' ? fields.id : null;
  const replyTo = typeof fields.reply_to === 'string' && isPublishableTopic(fields.reply_to) ? fields.reply_to : undefined;
  if (fields.id === undefined) {
    return { ok: false, id: null, replyTo, code: 'E_BAD_REQUEST', message: 'field "id" is missing: every request needs a string id, unique per device' };
  }
  const parsed = requestSchema.safeParse(body);
  if (!parsed.success) {
    const message = describeIssues(parsed.error.issues, body, 'field').join('; ');
    return { ok: false, id, replyTo, code: 'E_BAD_REQUEST', message };
  }
  return { ok: true, request: parsed.data };
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
  model: string;
  node: string;
  timings: { queue_ms: number; ttft_ms: number; total_ms: number; tokens_per_s: number };
}

export const chunkMessage = (id: string, seq: number, text: string) => JSON.stringify({ id, type: 'chunk', seq, text });

/**
 * The upstream failed after streaming `discarded_chars` characters: the chunks so far are void, and
 * the local model's chunks follow from its beginning (seq keeps counting).
 */
export const fallbackMessage = (id: string, seq: number, reason: string, discardedChars: number) =>
  JSON.stringify({ id, type: 'fallback', seq, route: 'local', reason, discarded_chars: discardedChars });

export const doneMessage = (id: string, f: DoneFields) => JSON.stringify({ id, type: 'done', ...f });

export const errorMessage = (id: string | null, code: ErrorCode, message: string) =>
  JSON.stringify({ id, type: 'error', error: { code, message } });
