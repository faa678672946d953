/**
 * Stop strings over streamed text: generated text arrives in chunks, and a stop string may
 * straddle them. StopMatcher passes on only text that cannot be the start of a stop string and
 * holds back the rest until the next chunk decides it.
 */
import { EdgeError } from '../errors.js';

export interface StopStep {
  /** Text that is final: emit it. */
  text: string;
  /** True once a stop string has completed; `text` is then everything before it. */
  stopped: boolean;
  /** The stop string that ended the stream (set with stopped). */
  stop?: string;
}

/**
 * Feeds chunks through `push()` and emits what is safe; `flush()` releases the held text when the
 * stream ends without a stop.
 *
 * The stream stops at the first position where any stop string is complete; when several end
 * there, the longest wins (it began earliest). The result does not depend on how the text is cut
 * into chunks. The stop string itself and everything after it are never emitted.
 *
 * Positions are UTF-16 code units, but the emitted text never ends in half of a surrogate pair:
 * a chunk that ends inside an emoji keeps its first half back for the next chunk.
 */
export class StopMatcher {
  private readonly stops: readonly string[];
  private readonly longest: number;
  private held = '';
  private matched: string | undefined;

  /** Throws EdgeError E_BAD_REQUEST for an empty stop string or a non-string. */
  constructor(stops: readonly string[]) {
    if (!Array.isArray(stops)) throw new EdgeError('E_BAD_REQUEST', 'stop must be an array of strings');
    stops.forEach((s: unknown, i) => {
      if (typeof s !== 'string') throw new EdgeError('E_BAD_REQUEST', `stop[${i}] must be a string, got ${typeof s}`);
      if (s === '') throw new EdgeError('E_BAD_REQUEST', `stop[${i}] is empty: a stop string needs at least one character`);
    });
    this.stops = [...stops];
    this.longest = stops.reduce((n, s) => Math.max(n, s.length), 0);
  }

  /** True once a stop string has been seen; later chunks are ignored. */
  get stopped(): boolean {
    return this.matched !== undefined;
  }

  push(chunk: string): StopStep {
    if (this.matched !== undefined) return { text: '', stopped: true, stop: this.matched };
    const buf = this.held + chunk;

    // The held text holds no complete stop (it would have ended the stream), so any match ends
    // in the new chunk; find the one that ends first.
    let bestEnd = Infinity;
    let bestStart = -1;
    let best = '';
    for (const s of this.stops) {
      const at = buf.indexOf(s);
      if (at < 0) continue;
      const end = at + s.length;
      if (end < bestEnd || (end === bestEnd && at < bestStart)) {
        bestEnd = end;
        bestStart = at;
        best = s;
      }
    }
    if (bestStart >= 0) {
      this.matched = best;
      this.held = '';
      return { text: buf.slice(0, bestStart), stopped: true, stop: best };
    }

    let keep = this.heldSuffix(buf);
    if (keep < buf.length && isHighSurrogate(buf.charCodeAt(buf.length - keep - 1))) keep++;
    this.held = buf.slice(buf.length - keep);
    return { text: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** At the end of the stream: the held text, which no stop string can complete any more. */
  flush(): string {
    const out = this.held;
    this.held = '';
    return out;
  }

  /** Length of the longest suffix of buf that is a proper prefix of some stop string. */
  private heldSuffix(buf: string): number {
    for (let n = Math.min(buf.length, this.longest - 1); n > 0; n--) {
      const tail = buf.slice(buf.length - n);
      if (this.stops.some((s) => s.length > n && s.startsWith(tail))) return n;
    }
    return 0;
  }
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
