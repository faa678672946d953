/**
 * Server-sent events as an upstream streams them (the HTML living standard's event stream): "data:"
 * lines accumulate, a blank line dispatches the event, ":" comments and the other fields are ignored.
 * Lines may end with \r\n, \n or \r, and a chunk may end anywhere, even between \r and \n.
 */

/** A broken server must not grow memory without bound: the event or line that passed the limit. */
export class SseTooLarge extends Error {}

export class SseReader {
  private pending = '';
  private data: string[] = [];
  private dataBytes = 0;

  /** `maxEventBytes`: the longest event (its data) and the longest line accepted. */
  constructor(readonly maxEventBytes: number) {}

  /** The data of each event the text completes, in order; throws SseTooLarge past the limit. */
  feed(text: string): string[] {
    const events: string[] = [];
    this.pending += text;
    let start = 0;
    for (;;) {
      const nl = this.pending.slice(start).search(/\r\n|\r|\n/);
      if (nl < 0) break;
      const end = start + nl;
      const line = this.pending.slice(start, end);
      if (this.pending[end] === '\r' && end + 1 === this.pending.length) break; // a lone \r at the end may be half of \r\n: wait for the next chunk
      start = end + (this.pending.startsWith('\r\n', end) ? 2 : 1);
      if (line === '') {
        if (this.data.length > 0) events.push(this.data.join('\n'));
        this.data = [];
        this.dataBytes = 0;
      } else if (line.startsWith('data:')) {
        const value = line.slice(line.startsWith('data: ') ? 6 : 5);
        this.dataBytes += value.length;
        if (this.dataBytes > this.maxEventBytes) throw new SseTooLarge(`an event larger than ${this.maxEventBytes} bytes`);
        this.data.push(value);
      }
      // "event:", "id:", "retry:" and ":" comments carry nothing the relay needs.
    }
    this.pending = this.pending.slice(start);
    if (this.pending.length > this.maxEventBytes) throw new SseTooLarge(`a line longer than ${this.maxEventBytes} bytes`);
    return events;
  }
}
