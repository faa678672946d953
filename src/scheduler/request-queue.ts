/**
 * The admission queue in front of the engine: at most `slots` jobs run at once (batch.max); the rest wait,
 * highest priority first, then earliest deadline, then first come. A waiting job whose deadline passes is
 * taken out and told so at that moment, not when a slot frees up.
 *
 * The batching window (batch.window_ms > 0): a job that arrives while nothing runs opens a window and
 * is held; so is every job arriving while the window is open. The window closes when `windowMs` have
 * passed since it opened or when `slots` jobs are held, and the held jobs then start together, in one
 * synchronous pump, so the engine gets their prompts back to back and prefills them in the same steps.
 * Jobs arriving while others run start as slots free (continuous batching), without a window: the
 * engine is already stepping, and holding them would only add latency. A held job is a waiting job:
 * its deadline, remove() (cancel), pause() and clear() (shutdown) apply to it unchanged.
 */
import { EdgeError } from '../errors.js';

export interface QueuedJob {
  /** Unique among waiting and running jobs (device + id). */
  readonly key: string;
  /** 0 (lowest) to 9. */
  readonly priority: number;
  /** ms since the epoch; null: no deadline. */
  readonly deadlineAt: number | null;
  /** Runs the job once a slot is free; the slot is held until the promise settles. */
  run(): Promise<void>;
  /** The deadline passed while the job waited; it will not run. */
  expire(): void;
}

interface Waiting {
  job: QueuedJob;
  order: number;
  timer: NodeJS.Timeout | undefined;
}

export class RequestQueue {
  private readonly waiting: Waiting[] = [];
  private readonly runningJobs = new Map<string, Promise<void>>();
  private order = 0;
  private paused = false;
  /** The open batching window's timer; undefined: no window is open. */
  private window: NodeJS.Timeout | undefined;

  /** `windowMs` (default 0: none) is batch.window_ms. */
  constructor(private readonly opts: { slots: number; maxWaiting: number; windowMs?: number }) {}

  get depth(): number {
    return this.waiting.length;
  }

  get running(): number {
    return this.runningJobs.size;
  }

  has(key: string): boolean {
    return this.runningJobs.has(key) || this.waiting.some((w) => w.job.key === key);
  }

  /**
   * Adds a job, starting it at once when a slot is free. Throws E_QUEUE_FULL when maxWaiting jobs already
   * wait, unless `force` (requests accepted before a restart are always taken back).
   */
  submit(job: QueuedJob, opts: { force?: boolean } = {}): void {
    if (this.has(job.key)) return;
    const wouldWait = this.paused || this.window !== undefined || this.runningJobs.size >= this.opts.slots;
    if (wouldWait && !opts.force && this.waiting.length >= this.opts.maxWaiting) {
      throw new EdgeError('E_QUEUE_FULL', `${this.waiting.length} requests are already waiting (limits.queue_depth): retry later`);
    }
    const entry: Waiting = { job, order: this.order++, timer: undefined };
    if (job.deadlineAt !== null) {
      entry.timer = setTimeout(() => this.expireWaiting(entry), Math.max(0, job.deadlineAt - Date.now()));
      entry.timer.unref();
    }
    this.waiting.push(entry);
    this.waiting.sort(before);
    const windowMs = this.opts.windowMs ?? 0;
    if (windowMs > 0 && this.window === undefined && this.runningJobs.size === 0 && !this.paused) {
      this.window = setTimeout(() => this.closeWindow(), windowMs);
      this.window.unref();
    }
    // A full window releases at once: more jobs than slots would not start together anyway.
    if (this.window !== undefined && this.waiting.length >= this.opts.slots) return this.closeWindow();
    this.pump();
  }

  /** Whether a batching window is open (its jobs are held). */
  get holding(): boolean {
    return this.window !== undefined;
  }

  /** Takes a waiting job out without running it; false when it is not waiting (running, or unknown). */
  remove(key: string): boolean {
    const i = this.waiting.findIndex((w) => w.job.key === key);
    if (i < 0) return false;
    clearTimeout(this.waiting[i]!.timer);
    this.waiting.splice(i, 1);
    this.forgetEmptyWindow();
    return true;
  }

  /** Starts no more jobs; waiting ones stay where they are. */
  pause(): void {
    this.paused = true;
  }

  /** Resolves once no job is running. */
  async idle(): Promise<void> {
    while (this.runningJobs.size > 0) await Promise.allSettled([...this.runningJobs.values()]);
  }

  /** Forgets every waiting job (their timers too) and returns their keys. */
  clear(): string[] {
    const keys = this.waiting.map((w) => w.job.key);
    for (const w of this.waiting) clearTimeout(w.timer);
    this.waiting.length = 0;
    this.forgetEmptyWindow();
    return keys;
  }

  private expireWaiting(entry: Waiting): void {
    const i = this.waiting.indexOf(entry);
    if (i < 0) return;
    this.waiting.splice(i, 1);
    this.forgetEmptyWindow();
    entry.job.expire();
  }

  /** The window ends: its held jobs start together (as many as there are slots). */
  private closeWindow(): void {
    clearTimeout(this.window);
    this.window = undefined;
    this.pump();
  }

  /** Every held job left (cancelled, expired, cleared): the next arrival opens a window of its own. */
  private forgetEmptyWindow(): void {
    if (this.waiting.length > 0) return;
    clearTimeout(this.window);
    this.window = undefined;
  }

  private pump(): void {
    while (!this.paused && this.window === undefined && this.runningJobs.size < this.opts.slots && this.waiting.length > 0) {
      const entry = this.waiting.shift()!;
      clearTimeout(entry.timer);
      const { job } = entry;
      const done = job
        .run()
        .catch(() => undefined) // a job reports its own failures; the slot must come back regardless
        .finally(() => {
          this.runningJobs.delete(job.key);
          this.pump();
        });
      this.runningJobs.set(job.key, done);
    }
  }
}

/** Higher priority first, then the earlier deadline (none counts as latest), then arrival. */
function before(a: Waiting, b: Waiting): number {
  if (a.job.priority !== b.job.priority) return b.job.priority - a.job.priority;
  const da = a.job.deadlineAt ?? Infinity;
  const db = b.job.deadlineAt ?? Infinity;
  if (da !== db) return da - db;
  return a.order - b.order;
}
