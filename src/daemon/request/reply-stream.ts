/**
 * A request's streamed reply as the device has it, kept so that a naive client (one that appends each
 * chunk's text and clears it on `restart` or `fallback`) always shows the right text, across a
 * restart of the daemon too. Every stream message is recorded in the store before it is published
 * (seq, and the text the device will hold: its length and sha256), and its PUBACK is recorded after.
 *
 * A run (local, cloud, a cache hit) starts an attempt with begin(); its text goes through piece().
 * What the device does not have yet goes out as one chunk whenever the broker is reachable, so text
 * generated while it was not (or before the session connected) is sent later, never skipped.
 *
 * A request taken back after a restart whose device already holds some text:
 * - when the run repeats itself (greedy, or a seed) and the broker acknowledged every stream message
 *   recorded, the text the device holds is regenerated silently; once it has been regenerated and its
 *   hash matches, the stream continues from there with the next seq;
 * - otherwise (sampling without a seed, the upstream, a message the broker may not have got, a hash
 *   that differs) a `restart` message tells the device to discard its text, and the attempt's text
 *   follows from its beginning. seq never goes back.
 */
import { createHash, type Hash } from 'node:crypto';
import { chunkMessage, fallbackMessage, restartMessage } from '../../protocol/codec.js';
import type { TokenLogprob } from '../../logprobs.js';
import type { Store, StreamMark } from '../../store/index.js';
import type { ReplyChannel } from '../../transport/mqtt/session.js';

/** What the device's text is compared by: sha256 of its UTF-16 code units (no lossy UTF-8 of a split pair). */
const digest = (h: Hash) => h.copy().digest('hex');
const hashOf = (text: string) => createHash('sha256').update(text, 'utf16le');

export class ReplyStream {
  /** The next stream message's seq. */
  private seq: number;
  /** The device holds deviceChars UTF-16 units; `hash` is over them. */
  private deviceChars: number;
  private deviceHash: string | null;
  /** Every recorded stream message was acknowledged by the broker: the device's text is the recorded one. */
  private sure: boolean;
  /** This attempt's text so far. */
  private text = '';
  /** The device's text is text[0, deviceChars) of this attempt (false until a resumed attempt shows it is). */
  private matched = true;
  /** This attempt repeats the one the device's text came from (greedy or seeded). */
  private repeatable = false;
  private running: Hash = hashOf('');
  /**
   * Log-probabilities of the tokens of text the device does not have yet: they go with it. Undefined
   * unless the request asked for them; then every chunk has them (none, for a piece whose token
   * came with an earlier one).
   */
  private tokens: TokenLogprob[] | undefined;
  /** A message that voids the device's text, to go out before the next chunk (a fallback). */
  private discard: ((seq: number, discardedChars: number) => string) | undefined;

  constructor(
    /** The request's context (its channel is attached after the job is made). */
    private readonly ctx: { readonly channel: ReplyChannel; readonly store: Store },
    private readonly to: { device: string; id: string; replyTopic: string; correlation: Buffer | null; traceparent?: string | null },
    private readonly enabled: boolean,
    mark: StreamMark,
  ) {
    this.seq = mark.seq;
    this.deviceChars = mark.chars;
    this.deviceHash = mark.hash;
    this.sure = mark.acked >= mark.seq;
  }

  /** A new attempt at the answer; `repeatable`: it regenerates the same text as the last one (greedy or seeded, local). */
  begin(repeatable: boolean): void {
    this.text = '';
    this.repeatable = repeatable;
    this.matched = this.deviceChars === 0 || this.discard !== undefined;
  }

  /** More of the attempt's text; `tokens`: its tokens' log-probabilities, when the request asked for them. */
  piece(text: string, tokens?: readonly TokenLogprob[]): void {
    this.text += text;
    if (tokens) (this.tokens ??= []).push(...tokens);
    this.flush(false);
  }

  /** The attempt ended: a device left holding text this attempt did not reproduce is told to discard it. */
  end(): void {
    this.flush(true);
  }

  /**
   * The upstream failed: the device discards its text (a `fallback` message, sent with the next
   * chunk or at the end), and the local model's attempt follows from its beginning.
   */
  fallback(reason: string): void {
    this.discard = (seq, discarded) => fallbackMessage(this.to.id, seq, reason, discarded);
    this.text = '';
    this.clearTokens();
    this.flush(false);
  }

  private flush(final: boolean): void {
    if (!this.enabled || !this.ctx.channel.isOpen()) return;
    if (this.discard) {
      const message = this.discard;
      this.discard = undefined;
      this.voidDeviceText(message);
    }
    if (!this.matched) {
      const regenerating = this.repeatable && this.sure && this.text.length < this.deviceChars;
      if (regenerating && !final) {
        this.clearTokens(); // the device has this much already: keep silent (its chunks carried these tokens)
        return;
      }
      const prefix = this.text.slice(0, this.deviceChars);
      if (this.repeatable && this.sure && prefix.length === this.deviceChars && digest(hashOf(prefix)) === this.deviceHash) {
        this.running = hashOf(prefix);
      } else {
        const why = !this.repeatable ? 'the answer is sampled anew' : !this.sure ? 'the last chunks may not have reached the broker' : 'the answer came out differently';
        this.voidDeviceText((seq, discarded) => restartMessage(this.to.id, seq, `resumed after a restart; ${why}`, discarded));
      }
      this.matched = true;
    }
    if (this.text.length <= this.deviceChars) {
      this.clearTokens();
      return;
    }
    const piece = this.text.slice(this.deviceChars);
    const tokens = this.tokens;
    this.clearTokens();
    this.running.update(piece, 'utf16le');
    this.send(this.text.length, digest(this.running), (seq) => chunkMessage(this.to.id, seq, piece, tokens));
  }

  private clearTokens(): void {
    if (this.tokens) this.tokens = [];
  }

  private voidDeviceText(message: (seq: number, discardedChars: number) => string): void {
    const discarded = this.deviceChars;
    this.send(0, null, (seq) => message(seq, discarded));
    this.running = hashOf('');
  }

  /** Records the message (what the device will hold once it is out), then publishes it. */
  private send(chars: number, hash: string | null, message: (seq: number) => string): void {
    const { device, id, replyTopic, correlation } = this.to;
    const seq = this.seq++;
    this.deviceChars = chars;
    this.deviceHash = hash;
    this.ctx.store.requests.markStreamed(device, id, { seq: this.seq, chars, hash });
    const acknowledged = () => {
      try {
        this.ctx.store.requests.streamAcknowledged(device, id, seq + 1);
      } catch {
        // the store closed during shutdown: the next start sees the message unacknowledged and restarts the stream
      }
    };
    this.ctx.channel.chunk(replyTopic, correlation, message(seq), { traceparent: this.to.traceparent ?? null, acknowledged });
  }
}
