/** EdgeErrors as OpenAI's error replies: the HTTP status, the type, the param at fault. */
import { EdgeError, type ErrorCode } from '../../errors.js';
import type { ApiError } from './http-io.js';
import type { ChatRequest } from './openai-request.js';

/** The EdgeError codes whose OpenAI status and code differ from a plain 400/500. */
const STATUS: Partial<Record<ErrorCode, Pick<ApiError, 'status' | 'type'> & { code?: string }>> = {
  E_BAD_REQUEST: { status: 400, type: 'invalid_request_error' },
  E_MODEL_UNSUPPORTED: { status: 400, type: 'invalid_request_error' },
  E_PROMPT_TOO_LONG: { status: 400, type: 'invalid_request_error', code: 'context_length_exceeded' },
  E_UNKNOWN_MODEL: { status: 404, type: 'invalid_request_error', code: 'model_not_found' },
  E_UNKNOWN_VARIANT: { status: 400, type: 'invalid_request_error', code: 'variant_not_found' },
  E_UNKNOWN_ADAPTER: { status: 404, type: 'invalid_request_error', code: 'adapter_not_found' },
  E_QUEUE_FULL: { status: 429, type: 'rate_limit_error' },
  E_UNAVAILABLE: { status: 503, type: 'server_error' },
  E_NOT_EMBEDDING_MODEL: { status: 400, type: 'invalid_request_error' },
  E_NOT_GENERATIVE: { status: 400, type: 'invalid_request_error' },
  E_INPUT_TOO_LONG: { status: 400, type: 'invalid_request_error', code: 'context_length_exceeded' },
  E_EMPTY_INPUT: { status: 400, type: 'invalid_request_error' },
  E_NO_POOLING: { status: 400, type: 'invalid_request_error' },
  E_BAD_ARGUMENT: { status: 400, type: 'invalid_request_error' },
  E_TOO_LARGE: { status: 400, type: 'invalid_request_error' },
  // Image or audio parts and no usable upstream: the request as sent cannot be served here.
  E_NO_ROUTE: { status: 400, type: 'invalid_request_error' },
  E_FORBIDDEN: { status: 403, type: 'permission_error' },
  E_UPSTREAM: { status: 502, type: 'server_error' },
};

export function apiErrorOf(err: unknown, request?: ChatRequest): ApiError {
  const e = err instanceof EdgeError ? err : new EdgeError('E_ENGINE', `the engine failed: ${(err as Error)?.message ?? String(err)}`);
  const s = STATUS[e.code] ?? { status: 500, type: 'server_error' as const };
  const param = e.code === 'E_UNKNOWN_MODEL' ? 'model' : e.code === 'E_UNKNOWN_VARIANT' ? 'variant' : e.code === 'E_UNKNOWN_ADAPTER' ? 'adapter' : e.code === 'E_PROMPT_TOO_LONG' && request ? 'messages' : null;
  return { status: s.status, type: s.type, message: e.message, param, code: s.code ?? e.code };
}

export function modelNotFound(id: string, models: string[]): ApiError {
  return { status: 404, message: `The model "${id}" does not exist on this node; it serves: ${models.join(', ')}`, type: 'invalid_request_error', param: 'model', code: 'model_not_found' };
}
