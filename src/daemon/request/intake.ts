/**
 * Intake: where a request enters the daemon. The payload is decoded and validated once
 * (protocol/codec.ts) into a Job, recorded durably (the request store), and handed to admit. A payload
 * that is not a request is refused at once; a device's repeat of an id is answered with the answer it
 * already has. Everything is written before intake returns, so the transport may acknowledge the
 * message then. resume() takes back the jobs a stop (or a crash) left unanswered. Every request gets its
 * trace here: the caller's W3C traceparent (an invalid one is ignored with a warning), else a new one.
 */
import type { DaemonConfig } from '../../config.js';
import { decodeRequest, errorMessage, type WireRequest } from '../../protocol/codec.js';
import type { MediaLimits } from '../../protocol/media-parts.js';
import { traceRequest, traceparentOf } from '../../protocol/trace-context.js';
import { NOTHING_STREAMED, type StoredRequest } from '../../store/index.js';
import type { IncomingRequest } from '../../transport/mqtt/session.js';
import { admit } from './admit.js';
import { auditRefusal } from './finish.js';
import { newJob, type RequestContext } from './job.js';

export function intake(ctx: RequestContext, msg: IncomingRequest, defaultReplyTopic: string): void {
  const now = Date.now();
  const { trace, log } = traceRequest(msg.traceparent, ctx.log, `request from ${msg.device}`);
  const traceparent = traceparentOf(trace);
  const decoded = decodeRequest(msg.payload, { maxPayloadBytes: ctx.config.limits.max_payload_bytes, media: mediaLimits(ctx.config) });
  const replyTopic = msg.responseTopic ?? (decoded.ok ? decoded.request.reply_to : decoded.replyTo) ?? defaultReplyTopic;
  const correlation = msg.correlation ?? null;
  const c = ctx.counters;
  c.requests++;
  if (!decoded.ok) {
    c.errors++;
    c.denied++;
    log.info(`request from ${msg.device} refused: ${decoded.message}`);
    ctx.observer.onFinished({ outcome: 'error', code: decoded.code, route: 'none', total_ms: 0, completion_tokens: 0, trace_id: trace.traceId });
    auditRefusal(ctx, msg.device, decoded.id ?? '', decoded.code, decoded.message, trace.traceId);
    ctx.channel.deliver(ctx.store.outbox.add(replyTopic, errorMessage(decoded.id, decoded.code, decoded.message, trace.traceId), correlation, traceparent));
    return;
  }
  const r = decoded.request;
  const deadlines = [
    ...(r.deadline_ms !== undefined ? [now + r.deadline_ms] : []),
    ...(msg.expirySeconds !== undefined ? [now + msg.expirySeconds * 1000] : []),
  ];
  const row: StoredRequest = {
    device: msg.device,
    id: r.id,
    payload: JSON.stringify(r),
    replyTopic,
    correlation,
    state: 'queued',
    reply: null,
    receivedAt: now,
    deadlineAt: deadlines.length > 0 ? Math.min(...deadlines) : null,
    traceparent,
    stream: NOTHING_STREAMED,
  };
  const accepted = ctx.store.requests.accept(row);
  if (!accepted.inserted) {
    const { existing } = accepted;
    log.debug(`duplicate request ${msg.device}/${r.id} (${existing.state}), first received in trace ${existing.traceparent?.split('-')[1] ?? 'none'}`);
    // A device's repeat of an answered id gets the same answer again, to wherever this copy asked.
    // Not answered yet: it will be answered once. A broker redelivery (we crashed before its PUBACK
    // went out) of an answered request needs nothing: that answer is already on its way.
    if (existing.reply !== null && !msg.redelivered) ctx.channel.deliver(ctx.store.outbox.add(replyTopic, existing.reply, correlation, existing.traceparent ?? null));
    return;
  }
  log.debug(`accepted ${msg.device}/${r.id}`);
  admit(ctx, newJob(ctx, row, r, false));
}

/** multimodal.*, as both transports check image and audio parts with it. */
export function mediaLimits(config: Pick<DaemonConfig, 'multimodal'>): MediaLimits {
  return { maxPartBytes: config.multimodal.max_part_bytes, httpsImageUrls: config.multimodal.https_image_urls };
}

/** Takes back every request accepted but not answered before the last stop; returns how many. */
export function resume(ctx: RequestContext): number {
  const open = ctx.store.requests.unanswered();
  for (const row of open) {
    ctx.store.requests.markQueued(row.device, row.id);
    // The payload was validated when it was accepted: the store holds the decoded request.
    admit(ctx, newJob(ctx, { ...row, state: 'queued' }, JSON.parse(row.payload) as WireRequest, true));
  }
  if (open.length > 0) ctx.log.info(`resumed ${open.length} request(s) accepted before the last stop`);
  return open.length;
}
