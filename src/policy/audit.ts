/**
 * What the audit log keeps: one record per request (allowed or denied, and how it ended), per grant
 * and revoke, per config load. The daemon appends them to an SQLite table behind AuditSink; records
 * are plain JSON values, built only from redacted data (prompt text only when configured).
 */
import { createHash } from 'node:crypto';
import type { MediaSummary } from '../protocol/media-parts.js';
import { redact, type Secret } from '../secret.js';
import type { Route } from './router.js';

export type RequestOutcome = 'ok' | 'denied' | 'error' | 'cancelled';

export interface RequestAudit {
  type: 'request';
  /** ms since the epoch, when the request's decision was made. */
  time: number;
  device: string;
  id: string;
  /** The request's W3C trace id (32 hex digits): the same as in its reply and its log lines. */
  trace_id?: string | undefined;
  /** The model asked for (name or class), or the one that ran once known. */
  model?: string | undefined;
  /** For a model name with A/B variants (model is then the variant's): the variant chosen, and that name. */
  variant?: string | undefined;
  variant_of?: string | undefined;
  /** The LoRA adapter asked for (config adapters.MODEL[].name). */
  adapter?: string | undefined;
  route?: Route | undefined;
  route_reason?: string | undefined;
  /** The device's roles when it was decided. */
  roles?: string[] | undefined;
  allowed: boolean;
  /** The refusal's code and message, for denied requests. */
  denied?: { code: string; message: string } | undefined;
  prompt_tokens?: number | undefined;
  completion_tokens?: number | undefined;
  outcome: RequestOutcome;
  /** The error that ended an allowed request (outcome 'error'). */
  error?: { code: string; message: string } | undefined;
  /** From arrival to the final reply (answered requests), in ms. */
  total_ms?: number | undefined;
  /** Decode rate of a generated answer (tokens/s; 0 for cached or relayed answers). */
  tokens_per_s?: number | undefined;
  /** Answered from the answer cache. */
  cached?: boolean | undefined;
  /** The cloud failed and local answered instead. */
  fallback?: boolean | undefined;
  /** Only with audit prompts enabled (a message's text parts only). */
  prompt?: string | undefined;
  /** The request's image and audio parts: kind, media type or format, decoded bytes; never their data. */
  media?: MediaSummary[] | undefined;
}

export interface GrantAudit {
  type: 'grant';
  time: number;
  device: string;
  role: string;
  expires_at: number;
  by?: string | undefined;
}

export interface RevokeAudit {
  type: 'revoke';
  time: number;
  device: string;
  /** "*" for every role. */
  role: string;
  /** Active grants it ended. */
  removed: number;
  by?: string | undefined;
}

export interface ConfigAudit {
  type: 'config';
  time: number;
  /** Where it came from: a file path, "defaults", "reload". */
  source: string;
  /** sha256 of the redacted config's JSON, to tell loads apart. */
  digest: string;
  /** The effective config, redacted. */
  config: unknown;
}

export type AuditRecord = RequestAudit | GrantAudit | RevokeAudit | ConfigAudit;

/** Append-only. Implementations must not throw for a well-formed record (log and count failures instead). */
export interface AuditSink {
  write(record: AuditRecord): void;
}

export class MemoryAuditSink implements AuditSink {
  readonly records: AuditRecord[] = [];

  write(record: AuditRecord): void {
    this.records.push(structuredClone(record));
  }

  requests(): RequestAudit[] {
    return this.records.filter((r): r is RequestAudit => r.type === 'request');
  }
}

/** The record of a config load: redacted (secret keys, URL credentials and the given secrets masked). */
export function configLoadRecord(config: unknown, source: string, time: number, secrets: ReadonlyArray<Secret | string | undefined> = []): ConfigAudit {
  const safe = redact(config, secrets);
  const digest = createHash('sha256').update(JSON.stringify(safe) ?? 'null').digest('hex');
  return { type: 'config', time, source, digest, config: safe };
}
