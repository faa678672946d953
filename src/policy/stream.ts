/**
 * A push-fed async iterator with a final result: the producer calls push(), end(result) or
 * fail(error); the consumer iterates and/or awaits `result`. Both the upstream reply and the hybrid
 * reply are one of these, so they behave like the engine's Generation: items are buffered until
 * read, `break` in a for-await loop calls onReturn (the producer's cancel) and then waits for the
 * result.
 */
export class PushStream<T, R> implements AsyncIterableIterator<T, R, undefined> {
  readonly result: Promise<R>;
  private readonly items: T[] = [];
  private head = 0;
  private waiters: Array<{ resolve: (r: IteratorResult<T, R>) => void; reject: (e: unknown) => void }> = [];
  private final: { value: R } | undefined;
  private failure: { error: unknown } | undefined;
  private returned = false;
  private resolveResult!: (r: R) => void;
  private rejectResult!: (e: unknown) => void;

  /** onReturn runs when the consumer stops early; it must make the producer end or fail soon. */
  constructor(private readonly onReturn: () => void = () => {}) {
    this.result = new Promise<R>((resolve, reject) => {
      this.resolveResult = resolve;
      this.rejectResult = reject;
    });
    this.result.catch(() => {}); // a consumer that only iterates sees the error from next()
  }

  /** True once end() or fail() was called. */
  get settled(): boolean {
    return this.final !== undefined || this.failure !== undefined;
  }

  push(item: T): void {
    if (this.settled) return;
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve({ value: item, done: false });
    else this.items.push(item);
  }

  end(value: R): void {
    if (this.settled) return;
    this.final = { value };
    for (const w of this.waiters.splice(0)) w.resolve({ value, done: true });
    this.resolveResult(value);
  }

  fail(error: unknown): void {
    if (this.settled) return;
    this.failure = { error };
    for (const w of this.waiters.splice(0)) w.reject(error);
    this.rejectResult(error);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<T, R>> {
    if (!this.returned && this.head < this.items.length) {
      const value = this.items[this.head]!;
      this.items[this.head++] = undefined as T;
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items.splice(0, this.head);
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.failure) return Promise.reject(this.failure.error);
    if (this.final) return Promise.resolve({ value: this.final.value, done: true });
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  async return(): Promise<IteratorResult<T, R>> {
    this.returned = true;
    if (!this.settled) this.onReturn();
    return { value: await this.result, done: true };
  }
}
