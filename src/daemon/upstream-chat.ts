/**
 * The OpenAI endpoint's requests with image or audio parts. The local models read text only, so such a
 * request goes to the upstream or nowhere, under the policy a device's request meets (access control
 * for the device `openai-api`, the route policy, the breaker: Admission.admit, which audits a refusal),
 * and its answer is relayed as the upstream streams it. It holds no queue slot. Like a device's cloud
 * request it has no local fallback (a text model would answer without seeing the parts), and it is
 * never cached. Each request leaves one audit record (with the parts' kinds and sizes) and one
 * /metrics observation (route "cloud").
 */
import { randomUUID } from 'node:crypto';
import { EdgeError } from '../errors.js';
import type { Logger } from '../log.js';
import { failureOf, promptText, type Admitted } from '../policy/admission.js';
import type { UpstreamReply, UpstreamResult } from '../policy/upstream.js';
import type { ChosenVariant } from '../policy/variants.js';
import { traceparentOf, type TraceContext } from '../protocol/trace-context.js';
import type { ChatRequest } from '../transport/http/openai-request.js';
import type { GenerateResult, Generation, Started } from '../transport/http/openai-server.js';
import type { LocalModel } from './engine-port.js';
import type { DaemonPolicy } from './hybrid-policy.js';
import { API_DEVICE, finishOrStop, stopping } from './local-chat.js';
import { upstreamRequest } from './request/run-cloud.js';
import { ignoreRequests, type RequestObserver } from './request-observer.js';

export class UpstreamChat {
  private accepting = true;
  /** Relays in progress: the drain waits for them, then stops them. */
  private readonly running = new Map<AbortController, Promise<unknown>>();

  constructor(
    private readonly deps: {
      policy: DaemonPolicy;
      /** By name; the first is the default (its tokenizer counts the text parts for access limits). */
      models: ReadonlyMap<string, LocalModel>;
      log: Logger;
      observer?: RequestObserver | undefined;
      /** Told after each upstream call reported to the breaker (the status topic shows its state). */
      onBreakerReport?: (() => void) | undefined;
    },
  ) {}

  /**
   * Admits the request (E_NO_ROUTE, E_FORBIDDEN, ... when it may not go upstream) and starts the upstream
   * call. `ab`: the A/B name the request asked for and its variant, which `request.model` already names.
   */
  complete(request: ChatRequest, signal: AbortSignal, trace?: TraceContext, ab?: ChosenVariant): Promise<Started> {
    const receivedAt = Date.now();
    const { policy, models } = this.deps;
    const observer = this.deps.observer ?? ignoreRequests;
    const refused = (err: unknown): Promise<never> => {
      observer.onFinished({ outcome: 'error', code: err instanceof EdgeError ? err.code : 'E_ENGINE', route: 'none', total_ms: Date.now() - receivedAt, completion_tokens: 0, trace_id: trace?.traceId });
      return Promise.reject(err);
    };
    if (!this.accepting) return refused(stopping());
    if (signal.aborted) return Promise.reject(signal.reason);
    let admitted: Admitted;
    try {
      const counter = models.get(request.model ?? '') ?? models.values().next().value;
      admitted = policy.admission.admit({
        id: randomUUID(),
        device: API_DEVICE,
        ...(trace ? { trace_id: trace.traceId } : {}),
        messages: request.messages,
        ...(request.model !== undefined ? { model: request.model } : {}),
        ...(ab !== undefined ? { ab } : {}),
        ...(request.max_tokens !== undefined ? { max_tokens: request.max_tokens } : {}),
        payload_bytes: Buffer.byteLength(JSON.stringify(request.messages)),
        prompt_tokens: counter ? counter.countTokens(promptText(request)) : 0,
      });
    } catch (err) {
      return refused(err); // admission audited it
    }
    const { decision, ticket, record } = admitted;
    if (decision.route !== 'cloud' || policy.upstream === undefined) {
      // The router never routes image or audio parts locally; if it did, nothing local may run them.
      ticket?.cancel();
      return refused(new EdgeError('E_NO_ROUTE', `a request with image or audio parts was routed ${decision.route} (${decision.reason}); only the upstream reads them`));
    }
    const stop = new AbortController();
    const onAbort = () => stop.abort('client');
    signal.addEventListener('abort', onAbort, { once: true });
    const reply = policy.upstream.chat(upstreamRequest(request, decision.model, admitted.max_tokens), {
      signal: stop.signal,
      ...(trace ? { traceparent: traceparentOf(trace) } : {}),
    });
    let firstAt: number | undefined;
    const report = (f: () => void) => {
      f();
      this.deps.onBreakerReport?.();
    };
    const ended = reply.result.then(
      (r) => {
        report(() => (r.finish_reason === 'cancelled' ? ticket?.cancel() : ticket?.success()));
        const usage = r.usage ?? { prompt_tokens: record.prompt_tokens ?? 0, completion_tokens: r.chunks };
        const total = Date.now() - receivedAt;
        Object.assign(record, { model: r.model, outcome: r.finish_reason === 'cancelled' ? 'cancelled' : 'ok', completion_tokens: usage.completion_tokens, total_ms: total, cached: false, tokens_per_s: 0 });
        observer.onFinished({
          outcome: r.finish_reason === 'cancelled' ? 'cancelled' : 'done',
          route: 'cloud',
          queue_ms: 0,
          ttft_ms: firstAt !== undefined ? firstAt - receivedAt : undefined,
          total_ms: total,
          completion_tokens: usage.completion_tokens,
          trace_id: trace?.traceId,
        });
      },
      (err: unknown) => {
        report(() => ticket?.failure(err));
        const e = err instanceof EdgeError ? err : new EdgeError('E_UPSTREAM', String(err));
        this.deps.log.info(`openai: the upstream failed (${failureOf(err)}) on a request with image or audio parts: ${e.message}`);
        Object.assign(record, { outcome: 'error', error: { code: e.code, message: e.message }, total_ms: Date.now() - receivedAt });
        observer.onFinished({ outcome: 'error', code: e.code, route: 'cloud', queue_ms: 0, total_ms: Date.now() - receivedAt, completion_tokens: 0, trace_id: trace?.traceId });
      },
    );
    const settled = ended.finally(() => {
      policy.admission.audit(record);
      signal.removeEventListener('abort', onAbort);
      this.running.delete(stop);
    });
    this.running.set(stop, settled);
    return Promise.resolve({ model: decision.model, ...(ab ? { variant: ab.variant } : {}), generation: relayed(reply, record.prompt_tokens ?? 0, stop.signal, () => (firstAt ??= Date.now())) });
  }

  /** Takes no more requests; relays in progress get `timeoutMs` to finish, then are stopped (E_UNAVAILABLE). */
  async drain(timeoutMs: number): Promise<void> {
    this.accepting = false;
    await finishOrStop(() => Promise.allSettled([...this.running.values()]), timeoutMs, () => {
      for (const stop of this.running.keys()) stop.abort('shutdown');
    });
  }
}

/**
 * The upstream's reply as the endpoint's Generation: text pieces as they arrive, and a result whose
 * usage is the upstream's (else the text parts' tokens and the chunks relayed). A relay stopped by the
 * shutdown is E_UNAVAILABLE: a cut answer is not an answer.
 */
function relayed(reply: UpstreamReply, promptTokens: number, stopped: AbortSignal, onPiece: () => void): Generation {
  const result = reply.result.then((r: UpstreamResult): GenerateResult => {
    if (r.finish_reason === 'cancelled' && stopped.reason === 'shutdown') {
      throw new EdgeError('E_UNAVAILABLE', `this node stopped after ${r.chunks} chunks of the upstream's answer, before it was complete: ask again`);
    }
    return { text: r.text, finish_reason: r.finish_reason, usage: r.usage ?? { prompt_tokens: promptTokens, completion_tokens: r.chunks } };
  });
  result.catch(() => undefined);
  const it: Generation = {
    next: async () => {
      try {
        const r = await reply.next();
        if (!r.done) onPiece();
        return r.done ? { done: true, value: undefined } : r;
      } catch {
        // The failure is the result's to report.
        return { done: true, value: undefined };
      }
    },
    return: async () => {
      await reply.return?.();
      return { done: true, value: undefined };
    },
    [Symbol.asyncIterator]: () => it,
    result,
  };
  return it;
}
