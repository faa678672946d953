/**
 * The daemon's long-lived parts, each with start() and stop() (Zigbee2MQTT's extensions): started in
 * order; at shutdown every started part drains what it owns (all at once, newest first, so each stops
 * taking work before an older one forgets what waits), then the started parts stop in reverse order.
 * A stop that comes while a part is starting waits for that part, and no later part starts.
 */
export interface Part {
  /** For the log: "model", "MQTT session", ... */
  readonly name: string;
  start(): Promise<void>;
  /** Finishes the work this part owns, or leaves it for the next start (bounded by limits.drain_s). */
  drain?(): Promise<void>;
  /** Releases what start() took. Called once, only on a part whose start() returned. */
  stop(): Promise<void>;
}

export class PartList {
  private readonly started: Part[] = [];
  private starting: Promise<void> | undefined;
  private stopped = false;

  /** True once stop() was called: a part that starts step by step (the models) ends its start there. */
  get stopping(): boolean {
    return this.stopped;
  }

  /** Starts the parts in order; false when a stop came first (the rest were not started). */
  async start(parts: Part[]): Promise<boolean> {
    for (const part of parts) {
      if (this.stopped) return false;
      // Recorded as started in the same step, so a stop waiting for this start finds it in the list.
      this.starting = part.start().then(() => {
        this.started.push(part);
      });
      await this.starting;
    }
    return !this.stopped;
  }

  /** Drains every started part, then stops them newest first; a part that failed to stop does not keep the others running. */
  async stop(onError: (part: Part, err: Error) => void): Promise<void> {
    this.stopped = true;
    await this.starting?.catch(() => undefined); // a part mid-start is stopped once it has started
    const newestFirst = [...this.started].reverse();
    await Promise.all(newestFirst.map((p) => p.drain?.().catch((err: Error) => onError(p, err))));
    for (const part of newestFirst) {
      try {
        await part.stop();
      } catch (err) {
        onError(part, err as Error);
      }
    }
    this.started.length = 0;
  }
}
