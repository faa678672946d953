// A deterministic LocalModel for the daemon's tests: it answers "you said: <the prompt's words>", one
// word per chunk, after `delayMs` each; a seed or temperature 0 makes it deterministic, otherwise a
// random tag is added (so tests can tell generations apart). Aborting ends it with 'cancelled'. Like
// the engine, it refuses (synchronously, E_PROMPT_TOO_LONG) a prompt + max_tokens beyond its context
// (one token per word), or gives a default max_tokens the room that is left. Asked with `trace`, its
// result has `steps`: when each word came and how many of this model's generations were running then.
import { EdgeError } from '../../src/errors.js';
import type { GenerateParams, GenerateResult, Generation, LocalModel } from '../../src/daemon/engine-port.js';

export class FakeModel implements LocalModel {
  readonly contextSize = 4096;
  /** generate() calls so far (cache tests count them). */
  calls = 0;
  closed = false;
  /** Generations running now (a trace's batch size). */
  private running = 0;

  constructor(
    readonly name: string,
    private readonly delayMs = 0,
    /** The real one is the file's fingerprint; the fake's answers depend on its name only. */
    readonly identity = `fake:${name}`,
  ) {}

  countTokens(text: string): number {
    return text.split(/\s+/).filter((w) => w !== '').length;
  }

  /** A generative model, as the engine's decoders: no embeddings. */
  async embed(): Promise<{ embedding: Float32Array; tokens: number }> {
    throw new EdgeError('E_NOT_EMBEDDING_MODEL', `'${this.name}' is a generative model: embeddings come from an encoder`);
  }

  generate(p: GenerateParams): Generation {
    this.calls++;
    const started = Date.now();
    const startedPerf = performance.now();
    const source = p.prompt ?? p.messages?.map((m) => m.content).join(' ') ?? '';
    const deterministic = p.temperature === 0 || p.seed !== undefined;
    const words = ['you', 'said:', ...source.split(/\s+/).filter((w) => w !== '')];
    if (!deterministic) words.push(`#${Math.random().toString(36).slice(2, 8)}`);
    const promptTokens = this.countTokens(source);
    const room = this.contextSize - promptTokens;
    let max = p.max_tokens ?? words.length;
    if (p.max_tokens_fits_context) max = Math.min(max, room);
    if (max < 1 || promptTokens + max > this.contextSize) {
      throw new EdgeError('E_PROMPT_TOO_LONG', `the prompt is ${promptTokens} tokens and max_tokens is ${max}, but the context holds ${this.contextSize}`);
    }
    const delayMs = this.delayMs;
    const steps = p.trace ? { at_ms: [] as number[], batch: [] as number[] } : undefined;
    const self = this;
    let resolveResult!: (r: GenerateResult) => void;
    const result = new Promise<GenerateResult>((resolve) => {
      resolveResult = resolve;
    });
    async function* run(): AsyncGenerator<string, void, undefined> {
      self.running++;
      try {
        yield* words_(); // the words, then the result
      } finally {
        self.running--;
      }
    }
    async function* words_(): AsyncGenerator<string, void, undefined> {
      let text = '';
      let n = 0;
      let firstAt = 0;
      let finish: GenerateResult['finish_reason'] = 'stop';
      for (const w of words) {
        if (n >= max) {
          finish = 'length';
          break;
        }
        if (delayMs > 0) await sleep(delayMs, p.signal);
        if (p.signal?.aborted) {
          finish = 'cancelled';
          break;
        }
        const piece = (n === 0 ? '' : ' ') + w;
        text += piece;
        n++;
        firstAt ||= Date.now();
        steps?.at_ms.push(performance.now() - startedPerf);
        steps?.batch.push(self.running);
        yield piece;
      }
      const total = Date.now() - started;
      resolveResult({
        text,
        finish_reason: finish,
        usage: { prompt_tokens: promptTokens, completion_tokens: n },
        timings: { queue_ms: 0, prompt_ms: 0, ttft_ms: firstAt ? firstAt - started : total, total_ms: total, decode_tokens_per_s: n > 0 ? (n * 1000) / Math.max(total, 1) : 0 },
        ...(steps ? { steps } : {}),
      });
    }
    return Object.assign(run(), { result });
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
