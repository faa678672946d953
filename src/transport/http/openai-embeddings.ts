/**
 * POST /v1/embeddings in OpenAI's shapes: the body checked field by field into an EmbeddingsRequest,
 * and the reply ({object: "list", data: [{object: "embedding", index, embedding}], model, usage}) with
 * each vector as JSON numbers (encoding_format "float") or as the base64 of its little-endian float32
 * bytes ("base64", what OpenAI's SDKs ask for by default).
 */
import { describeValue as kind } from '../../validation.js';
import { RequestFieldError } from './openai-request.js';

/** OpenAI's limit on inputs per request. */
export const MAX_INPUTS = 2048;

export interface EmbeddingsRequest {
  /** Absent: the node's first model. */
  model?: string;
  /** One entry per input: a text, or token ids taken as they are. */
  input: Array<string | number[]>;
  encoding_format: 'float' | 'base64';
}

/** What the backend computed: one unit vector per input, in order, and the tokens it read. */
export interface EmbeddingsResult {
  model: string;
  vectors: Float32Array[];
  prompt_tokens: number;
}

const FIELDS = new Set(['model', 'input', 'encoding_format', 'dimensions', 'user']);

export function parseEmbeddingsRequest(body: unknown): EmbeddingsRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new RequestFieldError(`the body must be a JSON object such as {"model": "...", "input": "text"}, got ${kind(body)}`, null);
  }
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) {
    if (!FIELDS.has(k)) throw new RequestFieldError(`${k} is not a field of an embeddings request (OpenAI's: model, input, encoding_format, dimensions, user)`, k);
  }
  const req: EmbeddingsRequest = { input: inputsOf(b.input), encoding_format: 'float' };
  if (b.model !== undefined) {
    if (typeof b.model !== 'string' || b.model === '') throw new RequestFieldError(`model must be a model name (GET /v1/models), got ${kind(b.model)}`, 'model');
    req.model = b.model;
  }
  if (b.encoding_format !== undefined) {
    if (b.encoding_format !== 'float' && b.encoding_format !== 'base64') {
      throw new RequestFieldError(`encoding_format must be "float" or "base64", got ${kind(b.encoding_format)}`, 'encoding_format');
    }
    req.encoding_format = b.encoding_format;
  }
  if (b.dimensions !== undefined) {
    throw new RequestFieldError('dimensions is not supported: the vectors have the model\'s own width (leave it out)', 'dimensions');
  }
  if (b.user !== undefined && typeof b.user !== 'string') throw new RequestFieldError(`user must be a string, got ${kind(b.user)}`, 'user');
  return req;
}

/** OpenAI's four forms: a string, an array of strings, an array of token ids, an array of such arrays. */
function inputsOf(v: unknown): Array<string | number[]> {
  const empty = () => new RequestFieldError('input is empty: give at least one character of text (or one token id) per input', 'input', 'E_EMPTY_INPUT');
  if (v === undefined) throw new RequestFieldError('input is missing: give a string or an array of strings to embed', 'input');
  if (typeof v === 'string') {
    if (v === '') throw empty();
    return [v];
  }
  if (!Array.isArray(v) || v.length === 0) {
    throw new RequestFieldError(`input must be a string, an array of strings, or token ids, got ${Array.isArray(v) ? 'an empty array' : kind(v)}`, 'input');
  }
  if (v.length > MAX_INPUTS) throw new RequestFieldError(`input has ${v.length} entries; at most ${MAX_INPUTS} per request`, 'input');
  if (v.every(isTokenId)) return [v as number[]];
  return v.map((x, i) => {
    if (typeof x === 'string') {
      if (x === '') throw empty();
      return x;
    }
    if (Array.isArray(x) && x.every(isTokenId)) {
      if (x.length === 0) throw empty();
      return x as number[];
    }
    throw new RequestFieldError(`input[${i}] must be a string or an array of token ids, got ${kind(x)}`, 'input');
  });
}

function isTokenId(x: unknown): boolean {
  return typeof x === 'number' && Number.isInteger(x) && x >= 0;
}

export function embeddingsReply(r: EmbeddingsResult, format: EmbeddingsRequest['encoding_format']) {
  return {
    object: 'list',
    data: r.vectors.map((v, index) => ({
      object: 'embedding',
      index,
      embedding: format === 'base64' ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') : Array.from(v),
    })),
    model: r.model,
    usage: { prompt_tokens: r.prompt_tokens, total_tokens: r.prompt_tokens },
  };
}
