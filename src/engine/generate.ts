/**
 * Text in, text out: a request becomes prompt tokens, the native decode loop generates tokens on
 * its own thread (batched with the model's other generations), and a Generation turns them back
 * into text chunks as they arrive.
 *
 *   const gen = model.generate({ prompt: 'Once upon a time', max_tokens: 64 });
 *   for await (const chunk of gen) process.stdout.write(chunk);
 *   const { finish_reason, usage, timings, sampling } = await gen.result;
 *
 * The event loop only admits, cancels and consumes: tokens arrive in batches through a
 * ThreadSafeFunction, and decoding them to text is a few string operations per token.
 */
import { randomInt } from 'node:crypto';
import { EdgeError, type ErrorCode } from '../errors.js';
import { chatStopStrings, chatStopTokens, renderChatFor, validateMessages, type ChatMessage } from './chat.js';
import { StepRecorder, type GenerationSteps } from './steps.js';
import { LogprobReader, topLogprobsOf, type TokenLogprob } from './logprobs.js';
import { StopMatcher } from './stop.js';
import type { StreamDecoder, Tokenizer } from './tokenizer/index.js';
import type { SamplingSettings, NativeFinish, NativeDecoder, NativeLogprobs, LoraChoice, NativeLoraChoice } from './native.js';
export type { SamplingSettings, NativeDecoder, DecodeState } from './native.js';
export type { GenerationSteps } from './steps.js';
/**
 * Defaults of every sampling parameter (llama.cpp's). The seed has no fixed default: a request
 * without one gets a random seed, reported in `result.sampling.seed` so the text can be reproduced.
 */
export const SAMPLING_DEFAULTS: Readonly<Omit<SamplingSettings, 'seed'>> = Object.freeze({
  temperature: 0.8,
  top_k: 40,
  top_p: 0.95,
  min_p: 0.05,
  repeat_penalty: 1.0,
  presence_penalty: 0.0,
  frequency_penalty: 0.0,
  penalty_last_n: 64,
});

/** A generation request: exactly one of `prompt` and `messages`. */
export interface GenerateRequest extends Partial<SamplingSettings> {
  /** Text the model continues (BOS is added as the model's tokenizer says). */
  prompt?: string;
  /** A chat: rendered with the model's chat template and an open assistant turn. */
  messages?: readonly ChatMessage[];
  /**
   * Most tokens to generate (>= 1). Default: what the context has left after the prompt.
   * prompt tokens + max_tokens must fit the context (unless the model was loaded with sinks).
   */
  max_tokens?: number;
  /** Generation stops before the first of these strings; it is not part of the text. */
  stop?: string | readonly string[];
  /** Aborting cancels the generation at once: finish_reason 'cancelled', the text so far kept. */
  signal?: AbortSignal;
  /** Record `steps` in the result: when each token was sampled and how many sequences its step advanced. */
  trace?: boolean;
  /** Per generated token its log-probability (see logprobs.ts for which distribution). */
  logprobs?: boolean;
  /** 0..20 most probable alternatives per token, with logprobs: true. */
  top_logprobs?: number;
  /**
   * Measure the model's own log-probabilities (no penalties, no temperature) of the prompt tokens
   * (each given its prefix) and of the generated ones: result.raw_logprobs, the drift signal. The
   * prompt is then evaluated in chunks of at most 16 tokens.
   */
  raw_logprobs?: boolean;
  /** LoRA adapters loaded on this model (Model.loadAdapter) to generate with, each with its scale. */
  lora?: readonly LoraChoice[];
}

/** Sums of natural-log probabilities under the model's own distribution (GenerateRequest.raw_logprobs). */
export interface RawLogprobs {
  prompt_sum: number;
  /** Prompt tokens after the first. */
  prompt_tokens: number;
  completion_sum: number;
  completion_tokens: number;
}

/**
 * Why a generation ended: 'stop' = an end-of-generation token or a stop string, 'length' =
 * max_tokens (or the end of the context), 'cancelled' = the signal, return() or Model.close().
 */
export type FinishReason = 'stop' | 'length' | 'cancelled';

export interface GenerateUsage {
  /** Tokens of the prompt as evaluated (BOS and chat markup included). */
  prompt_tokens: number;
  /** Tokens generated, an end-of-generation token included. */
  completion_tokens: number;
}

/** Milliseconds measured by the native loop from the moment the request reached it. */
export interface GenerateTimings {
  /** Waiting for a free sequence slot. */
  queue_ms: number;
  /** Evaluating the prompt (chunked, alongside other sequences' steps). */
  prompt_ms: number;
  /** Until the first generated token. */
  ttft_ms: number;
  total_ms: number;
  /** Generated tokens after the first, per second of decoding (0 with fewer than 2 tokens). */
  decode_tokens_per_s: number;
}

export interface GenerateResult {
  /** Everything the iterator yielded, joined. */
  text: string;
  finish_reason: FinishReason;
  /** The stop string that ended the text, when one did. */
  stop?: string;
  usage: GenerateUsage;
  timings: GenerateTimings;
  /** The sampling parameters used, defaults included. */
  sampling: SamplingSettings;
  /** Only for a `trace` request: one entry per token of the answer. */
  steps?: GenerationSteps;
  /** With logprobs: one entry per generated token counted in usage (an end-of-generation token excluded). */
  logprobs?: { content: TokenLogprob[] };
  /** With raw_logprobs (absent for a generation cancelled before it started). */
  raw_logprobs?: RawLogprobs;
}

/** @internal what the Model hands to startGeneration */
export interface GenerationContext {
  native: NativeDecoder;
  tokenizer: Tokenizer;
  contextSize: number;
  /** Every layer keeps bounded KV (sinks / sliding window): prompts may exceed the context. */
  unbounded: boolean;
  /** The addon's form of a request's lora list (Model checks the adapters are its own). */
  lora?: (choices: unknown) => NativeLoraChoice[] | undefined;
}

const REQUEST_FIELDS = new Set([
  'prompt',
  'messages',
  'max_tokens',
  'stop',
  'signal',
  'trace',
  'logprobs',
  'top_logprobs',
  'raw_logprobs',
  'lora',
  ...Object.keys(SAMPLING_DEFAULTS),
  'seed',
]);
const MAX_STOP_STRINGS = 16;

/** @internal Model.generate(): validates, tokenizes, submits. Throws EdgeError synchronously. */
export function startGeneration(ctx: GenerationContext, request: GenerateRequest): Generation {
  if (typeof request !== 'object' || request === null || Array.isArray(request)) {
    throw badRequest('the request must be an object such as {prompt, max_tokens}');
  }
  for (const key of Object.keys(request)) {
    if (!REQUEST_FIELDS.has(key)) throw badRequest(`unknown field "${key}" (known: ${[...REQUEST_FIELDS].join(', ')})`);
  }
  const sampling = samplingOf(request);
  const topLogprobs = topLogprobsOf(request);
  if (request.raw_logprobs !== undefined && typeof request.raw_logprobs !== 'boolean') {
    throw badRequest(`raw_logprobs must be true or false, got ${describe(request.raw_logprobs)}`);
  }
  const stops = stopStrings(request.stop);
  const lora = request.lora === undefined ? undefined : ctx.lora?.(request.lora);
  const signal = request.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw badRequest('signal must be an AbortSignal');

  const { tokenizer } = ctx;
  let tokens: number[];
  if ((request.prompt === undefined) === (request.messages === undefined)) {
    throw badRequest('give exactly one of prompt (text) and messages (a chat)');
  }
  if (request.prompt !== undefined) {
    if (typeof request.prompt !== 'string') throw badRequest(`prompt must be a string, got ${typeof request.prompt}`);
    tokens = tokenizer.encode(request.prompt);
  } else {
    const messages = validateMessages(request.messages);
    const text = renderChatFor(tokenizer, messages, { addGenerationPrompt: true });
    // A template that writes {{ bos_token }} has put BOS in the text already.
    const templateBos = (tokenizer.vocab.chatTemplate ?? '').includes('bos_token');
    tokens = tokenizer.encode(text, { parseSpecial: true, ...(templateBos ? { addBos: false } : {}) });
    for (const s of chatStopStrings(tokenizer)) if (!stops.includes(s)) stops.push(s);
  }
  if (tokens.length === 0) throw badRequest('prompt is empty and the model has no BOS token to start from');

  const room = ctx.contextSize - tokens.length;
  let maxTokens: number;
  if (request.max_tokens !== undefined) {
    maxTokens = wholeNumber('max_tokens', request.max_tokens, 1, 2 ** 31 - 1);
    if (!ctx.unbounded && maxTokens > room) throw promptTooLong(tokens.length, maxTokens, ctx.contextSize);
  } else {
    if (!ctx.unbounded && room < 1) throw promptTooLong(tokens.length, 1, ctx.contextSize);
    maxTokens = ctx.unbounded ? ctx.contextSize : room;
  }

  return new Generation(ctx, {
    tokens: Int32Array.from(tokens),
    stopTokens: Int32Array.from(chatStopTokens(tokenizer)),
    maxTokens,
    sampling,
    matcher: new StopMatcher(stops),
    decoder: tokenizer.decoder({ continuation: true }),
    signal,
    trace: request.trace === true,
    topLogprobs,
    rawLogprobs: request.raw_logprobs === true,
    lora,
    logprobReader: topLogprobs === undefined ? undefined : new LogprobReader(tokenizer),
  });
}

/**
 * A running generation: iterate it for text chunks (valid UTF-8 strings, stop strings held back),
 * or await `result`. Both work at once; the return value of the iteration is the result too.
 * Breaking out of a `for await` loop cancels the generation.
 */
export class Generation implements AsyncIterableIterator<string, GenerateResult, undefined> {
  /** Settles when the generation ends; rejects with an EdgeError if the engine failed. */
  readonly result: Promise<GenerateResult>;
  /** The native sequence id (0 when it never started). */
  readonly id: number;
  /**
   * With logprobs: an entry per generated token as it arrives (a streaming consumer takes the ones
   * past what it has sent); may run ahead of the text, which holds back partial characters and stop
   * strings. The result's list is this one cut at usage.completion_tokens.
   */
  readonly logprobs: TokenLogprob[] | undefined;

  private readonly native: NativeDecoder;
  private readonly matcher: StopMatcher;
  private readonly decoder: StreamDecoder;
  private readonly sampling: SamplingSettings;
  private readonly promptTokens: number;
  private readonly chunks: string[] = [];
  private head = 0;
  private waiters: Array<{ resolve: (r: IteratorResult<string, GenerateResult>) => void; reject: (e: unknown) => void }> = [];
  private text = '';
  private tokensSeen = 0;
  private stopString: string | undefined;
  private tokensAtStop = 0;
  private final: GenerateResult | undefined;
  private failure: EdgeError | undefined;
  private resolveResult!: (r: GenerateResult) => void;
  private rejectResult!: (e: EdgeError) => void;
  private readonly signal: AbortSignal | undefined;
  private readonly onAbort = () => this.cancel();
  private returned = false;
  private readonly steps: StepRecorder | undefined;
  private readonly logprobReader: LogprobReader | undefined;
  private raw: RawLogprobs | undefined;

  /** @internal use Model.generate() */
  constructor(
    ctx: GenerationContext,
    init: {
      tokens: Int32Array;
      stopTokens: Int32Array;
      maxTokens: number;
      sampling: SamplingSettings;
      matcher: StopMatcher;
      decoder: StreamDecoder;
      signal: AbortSignal | undefined;
      trace?: boolean;
      topLogprobs?: number | undefined;
      rawLogprobs?: boolean;
      lora?: NativeLoraChoice[] | undefined;
      logprobReader?: LogprobReader | undefined;
    },
  ) {
    if (init.trace) this.steps = new StepRecorder();
    this.logprobReader = init.logprobReader;
    this.logprobs = init.logprobReader ? [] : undefined;
    this.native = ctx.native;
    this.matcher = init.matcher;
    this.decoder = init.decoder;
    this.sampling = init.sampling;
    this.promptTokens = init.tokens.length;
    this.signal = init.signal;
    this.result = new Promise<GenerateResult>((resolve, reject) => {
      this.resolveResult = resolve;
      this.rejectResult = reject;
    });
    this.result.catch(() => {}); // a consumer that only iterates still sees the error from next()
    if (init.signal?.aborted) {
      this.id = 0;
      this.finalize('cancelled', { prompt_tokens: this.promptTokens, completion_tokens: 0 }, undefined);
      return;
    }
    this.id = this.native.generate(
      {
        tokens: init.tokens,
        stopTokens: init.stopTokens,
        maxTokens: init.maxTokens,
        ...init.sampling,
        ...(init.trace ? { trace: true } : {}),
        ...(init.topLogprobs !== undefined ? { topLogprobs: init.topLogprobs } : {}),
        ...(init.rawLogprobs ? { rawLogprobs: true } : {}),
        ...(init.lora ? { lora: init.lora } : {}),
      },
      (tokens, finish, steps, logprobs) => this.onNative(tokens, finish, steps, logprobs),
    );
    init.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /** Ends the generation now (finish_reason 'cancelled'); its KV cache is released (kept for the next generation or freed) before the next step. */
  cancel(): void {
    if (this.final === undefined && this.failure === undefined && this.id !== 0) this.native.cancel(this.id);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<string, GenerateResult>> {
    if (!this.returned && this.head < this.chunks.length) {
      const value = this.chunks[this.head]!;
      this.chunks[this.head++] = '';
      return Promise.resolve({ value, done: false });
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.final) return Promise.resolve({ value: this.final, done: true });
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Called by `break` in a for-await loop: cancels, then ends with the result. */
  async return(): Promise<IteratorResult<string, GenerateResult>> {
    this.returned = true;
    this.cancel();
    return { value: await this.result, done: true };
  }

  private onNative(
    tokens: Int32Array,
    finish: NativeFinish | undefined,
    steps: Float64Array | undefined,
    logprobs: NativeLogprobs | undefined,
  ): void {
    if (steps) this.steps?.push(steps);
    if (logprobs && this.logprobReader && this.stopString === undefined) this.logprobReader.append(tokens, logprobs, this.logprobs!);
    for (const id of tokens) {
      if (this.stopString !== undefined) break;
      this.tokensSeen++;
      const text = this.decoder.push(id);
      if (text !== '') this.feed(text);
      if (this.stopString !== undefined) {
        this.tokensAtStop = this.tokensSeen;
        this.native.cancel(this.id); // the finish arrives within a step; 'stop' is kept
      }
    }
    if (finish) this.end(finish);
  }

  private feed(text: string): void {
    const step = this.matcher.push(text);
    if (step.text !== '') this.emit(step.text);
    if (step.stopped) this.stopString = step.stop;
  }

  private emit(chunk: string): void {
    this.text += chunk;
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve({ value: chunk, done: false });
    else this.chunks.push(chunk);
  }

  private end(f: NativeFinish): void {
    this.signal?.removeEventListener('abort', this.onAbort);
    if (f.reason === 'error') {
      this.failure = new EdgeError((f.code ?? 'E_ENGINE') as ErrorCode, f.message ?? 'the generation failed');
      for (const w of this.waiters.splice(0)) w.reject(this.failure);
      this.rejectResult(this.failure);
      return;
    }
    if (this.stopString === undefined) {
      const tail = this.decoder.end();
      if (tail !== '') this.feed(tail);
      if (this.stopString === undefined) {
        const held = this.matcher.flush();
        if (held !== '') this.emit(held);
      } else {
        this.tokensAtStop = this.tokensSeen;
      }
    }
    const stopped = this.stopString !== undefined;
    const reason: FinishReason = stopped ? 'stop' : f.reason;
    const usage = {
      prompt_tokens: f.prompt_tokens,
      completion_tokens: stopped ? this.tokensAtStop : f.completion_tokens,
    };
    if (f.prompt_logprob_tokens !== undefined) {
      this.raw = {
        prompt_sum: f.prompt_logprob_sum ?? 0,
        prompt_tokens: f.prompt_logprob_tokens,
        completion_sum: f.completion_logprob_sum ?? 0,
        completion_tokens: f.completion_logprob_tokens ?? 0,
      };
    }
    const decodeTokensPerS = f.completion_tokens > 1 && f.decode_ms > 0 ? (f.completion_tokens - 1) / (f.decode_ms / 1000) : 0;
    this.finalize(reason, usage, {
      queue_ms: f.queue_ms,
      prompt_ms: f.prompt_ms,
      ttft_ms: f.ttft_ms,
      total_ms: f.total_ms,
      decode_tokens_per_s: decodeTokensPerS,
    });
  }

  private finalize(reason: FinishReason, usage: GenerateUsage, timings: GenerateTimings | undefined): void {
    const final: GenerateResult = {
      text: this.text,
      finish_reason: reason,
      ...(this.stopString !== undefined ? { stop: this.stopString } : {}),
      usage,
      timings: timings ?? { queue_ms: 0, prompt_ms: 0, ttft_ms: 0, total_ms: 0, decode_tokens_per_s: 0 },
      sampling: { ...this.sampling },
      ...(this.steps ? { steps: this.steps.take(usage.completion_tokens) } : {}),
      ...(this.logprobs ? { logprobs: { content: this.logprobs.slice(0, usage.completion_tokens) } } : {}),
      ...(this.raw ? { raw_logprobs: this.raw } : {}),
    };
    this.final = final;
    for (const w of this.waiters.splice(0)) w.resolve({ value: final, done: true });
    this.resolveResult(final);
  }
}

// ---- validation ---------------------------------------------------------------------------------

function samplingOf(r: GenerateRequest): SamplingSettings {
  const num = (field: keyof SamplingSettings, lo: number, hi: number, loOpen = false): number => {
    const v = r[field] ?? (field === 'seed' ? undefined : SAMPLING_DEFAULTS[field as keyof typeof SAMPLING_DEFAULTS]);
    if (typeof v !== 'number' || !Number.isFinite(v) || (loOpen ? v <= lo : v < lo) || v > hi) {
      const range = `${loOpen ? '(' : '['}${lo}, ${hi === Infinity ? 'inf)' : hi + ']'}`;
      throw badRequest(`${field} must be a number in ${range}, got ${describe(v)}`);
    }
    return v;
  };
  const seed = r.seed === undefined ? randomInt(0, 2 ** 48 - 1) : wholeNumber('seed', r.seed, 0, Number.MAX_SAFE_INTEGER);
  return {
    temperature: num('temperature', 0, Infinity),
    top_k: wholeNumber('top_k', r.top_k ?? SAMPLING_DEFAULTS.top_k, 0, 2 ** 31 - 1),
    top_p: num('top_p', 0, 1, true),
    min_p: num('min_p', 0, 1),
    repeat_penalty: num('repeat_penalty', 0, Infinity, true),
    presence_penalty: num('presence_penalty', -2, 2),
    frequency_penalty: num('frequency_penalty', -2, 2),
    penalty_last_n: wholeNumber('penalty_last_n', r.penalty_last_n ?? SAMPLING_DEFAULTS.penalty_last_n, 0, 1 << 20),
    seed,
  };
}

function stopStrings(stop: unknown): string[] {
  if (stop === undefined) return [];
  const list = typeof stop === 'string' ? [stop] : stop;
  if (!Array.isArray(list)) throw badRequest(`stop must be a string or an array of strings, got ${describe(stop)}`);
  if (list.length > MAX_STOP_STRINGS) throw badRequest(`stop has ${list.length} strings; at most ${MAX_STOP_STRINGS}`);
  new StopMatcher(list); // throws E_BAD_REQUEST naming the bad entry
  return [...(list as string[])];
}

function wholeNumber(field: string, v: unknown, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw badRequest(`${field} must be a whole number from ${lo} to ${hi}, got ${describe(v)}`);
  }
  return v;
}

function promptTooLong(promptTokens: number, maxTokens: number, context: number): EdgeError {
  return new EdgeError(
    'E_PROMPT_TOO_LONG',
    `the prompt is ${promptTokens} tokens and max_tokens is ${maxTokens} (${promptTokens + maxTokens} in all), ` +
      `but the context holds ${context}; shorten the prompt, lower max_tokens, or load the model with a larger ` +
      'contextSize (or with sinks)',
  );
}

function badRequest(message: string): EdgeError {
  return new EdgeError('E_BAD_REQUEST', message);
}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === undefined || v === null) return String(v);
  return Array.isArray(v) ? 'an array' : typeof v;
}
