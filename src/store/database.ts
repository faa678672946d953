/**
 * The daemon's SQLite file (<state_dir>/edgellm.db): opened once, migrated forward, shared by the
 * requests, outbox, cache, grants and audit tables. The CLI (`edgellm grant`, `revoke`, `audit`)
 * opens the same file from another process while the daemon runs; WAL lets both read and write.
 *
 * journal_mode=WAL with synchronous=FULL: every commit fsyncs the WAL before it returns, so a request
 * whose PUBACK has left survives a power cut. NORMAL would only fsync at checkpoints and may lose the
 * last commits on power loss (the file stays consistent, but an acknowledged request would vanish).
 * Commits here are per request, not per token, so the fsync cost is small next to a generation.
 */
import Database from 'better-sqlite3';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { EdgeError } from '../errors.js';

export type Db = Database.Database;

/** Each entry moves the schema from version i to i + 1; never edit one that has shipped. */
export const migrations: readonly string[] = [
  `CREATE TABLE requests (
     device      TEXT NOT NULL,
     id          TEXT NOT NULL,
     payload     TEXT NOT NULL,               -- the validated request, JSON
     reply_topic TEXT NOT NULL,
     correlation BLOB,                        -- MQTT 5 Correlation Data, echoed on every reply
     state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'error', 'cancelled')),
     reply       TEXT,                        -- the final message (done or error), JSON
     received_at INTEGER NOT NULL,            -- ms since the epoch
     deadline_at INTEGER,                     -- ms since the epoch; NULL: none
     started_at  INTEGER,
     finished_at INTEGER,
     PRIMARY KEY (device, id)
   ) WITHOUT ROWID;
   CREATE INDEX requests_open ON requests (state) WHERE state IN ('queued', 'running');

   CREATE TABLE outbox (
     seq          INTEGER PRIMARY KEY AUTOINCREMENT,
     topic        TEXT NOT NULL,
     payload      TEXT NOT NULL,
     correlation  BLOB,
     created_at   INTEGER NOT NULL
   );

   CREATE TABLE cache (
     key         TEXT PRIMARY KEY,             -- sha256 of model + normalized request
     model       TEXT NOT NULL,
     result      TEXT NOT NULL,                -- {text, finish_reason, usage}, JSON
     created_at  INTEGER NOT NULL,
     used_at     INTEGER NOT NULL,
     hits        INTEGER NOT NULL DEFAULT 0
   ) WITHOUT ROWID;
   CREATE INDEX cache_lru ON cache (used_at);`,

  // 2: temporary grants and the append-only audit log (see grants.ts and audit.ts).
  `CREATE TABLE grants (
     device      TEXT NOT NULL,
     role        TEXT NOT NULL,
     granted_at  INTEGER NOT NULL,            -- ms since the epoch
     expires_at  INTEGER NOT NULL,            -- ms since the epoch; active while expires_at > now
     granted_by  TEXT,                        -- who granted it (the OS user of \`edgellm grant\`)
     PRIMARY KEY (device, role)
   ) WITHOUT ROWID;

   CREATE TABLE audit (
     seq     INTEGER PRIMARY KEY AUTOINCREMENT,
     time    INTEGER NOT NULL CHECK (time > 0), -- ms since the epoch, the record's own time
     type    TEXT NOT NULL CHECK (type IN ('request', 'grant', 'revoke', 'config')),
     device  TEXT,                            -- NULL for config loads
     record  TEXT NOT NULL                    -- the whole record, JSON
   );
   CREATE INDEX audit_time ON audit (time);
   CREATE INDEX audit_device ON audit (device, time);

   -- Rows leave the audit log only through the retention prune: it raises prune_before (never to
   -- less than a day ago), deletes the rows older than it and sets it back to 0, in one transaction.
   -- Any other DELETE, every UPDATE and any INSERT that would replace a row is refused.
   CREATE TABLE audit_prune (
     id            INTEGER PRIMARY KEY CHECK (id = 1),
     prune_before  INTEGER NOT NULL            -- ms since the epoch; 0 outside a prune
   );
   INSERT INTO audit_prune (id, prune_before) VALUES (1, 0);

   CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
   BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: rows cannot be changed'); END;
   CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
   WHEN OLD.time >= (SELECT prune_before FROM audit_prune WHERE id = 1)
   BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: rows leave only through the retention prune'); END;
   CREATE TRIGGER audit_no_replace BEFORE INSERT ON audit
   WHEN EXISTS (SELECT 1 FROM audit WHERE seq = NEW.seq)
   BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: rows cannot be replaced'); END;
   CREATE TRIGGER audit_prune_floor BEFORE UPDATE ON audit_prune
   WHEN NEW.id IS NOT 1 OR (NEW.prune_before > OLD.prune_before
     AND NEW.prune_before > CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) - 86400000)
   BEGIN SELECT RAISE(ABORT, 'the audit log keeps at least one day: prune_before cannot be later than a day ago'); END;
   CREATE TRIGGER audit_prune_no_delete BEFORE DELETE ON audit_prune
   BEGIN SELECT RAISE(ABORT, 'audit_prune holds the retention gate and cannot be deleted'); END;
   CREATE TRIGGER audit_prune_no_insert BEFORE INSERT ON audit_prune
   BEGIN SELECT RAISE(ABORT, 'audit_prune holds one row'); END;`,

  // 3: request tracing. The traceparent a request's replies carry (its trace id and its own span,
  // kept so a request resumed after a restart stays in its trace), on the request and on each reply
  // waiting in the outbox (the MQTT 5 user property it is published with). Audit records hold the
  // trace id in their JSON (trace_id).
  `ALTER TABLE requests ADD COLUMN traceparent TEXT;
   ALTER TABLE outbox ADD COLUMN traceparent TEXT;`,
  // 4: where a streaming reply stands (so a resumed request continues it, see daemon/request/reply-stream.ts)
  // and the daemon's outgoing QoS 2 packets (MQTT.js's outgoingStore, see packets.ts), each linked to
  // the outbox row it carries, so a restart finishes their handshake instead of publishing them anew.
  `ALTER TABLE requests ADD COLUMN stream_seq INTEGER NOT NULL DEFAULT 0;    -- stream messages published (the next one's seq)
   ALTER TABLE requests ADD COLUMN stream_acked INTEGER NOT NULL DEFAULT 0;  -- of those, how many the broker acknowledged
   ALTER TABLE requests ADD COLUMN stream_chars INTEGER NOT NULL DEFAULT 0;  -- the device's text: UTF-16 units since the last restart
   ALTER TABLE requests ADD COLUMN stream_hash TEXT;                         -- sha256 of that text (UTF-16LE); NULL when empty
   ALTER TABLE outbox ADD COLUMN packet_id INTEGER;                          -- the MQTT packet id carrying it, once MQTT.js stored it
   CREATE TABLE mqtt_outgoing (
     packet_id   INTEGER PRIMARY KEY,         -- MQTT packet identifier, 1-65535
     cmd         TEXT NOT NULL CHECK (cmd IN ('publish', 'pubrel')),
     packet      TEXT NOT NULL                -- the packet as MQTT.js keeps it, JSON (Buffers as base64)
   );`,
];

export interface OpenOptions {
  /**
   * Create the state directory and the database when they are missing (the daemon). False for the
   * CLI commands that only work on a daemon's existing database: a missing one is an E_STORE that
   * says so, rather than a fresh empty database in the wrong place.
   */
  create?: boolean;
}

export function openDatabase(stateDir: string, opts: OpenOptions = {}): Db {
  const create = opts.create ?? true;
  const file = join(stateDir, 'edgellm.db');
  let db: Db;
  try {
    if (create) mkdirSync(stateDir, { recursive: true });
    else if (!existsSync(file)) throw new EdgeError('E_STORE', missingDatabase(stateDir));
    db = new Database(file, { fileMustExist: !create });
  } catch (err) {
    if (err instanceof EdgeError) throw err;
    throw new EdgeError('E_STORE', `cannot open the database in state_dir ${stateDir}: ${(err as Error).message}${accessHint(err)}`, { cause: err });
  }
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('busy_timeout = 5000');
    migrate(db);
  } catch (err) {
    db.close();
    if (err instanceof EdgeError) throw err;
    throw new EdgeError('E_STORE', `cannot prepare the database in ${stateDir}: ${(err as Error).message}${accessHint(err)}`, { cause: err });
  }
  return db;
}

function missingDatabase(stateDir: string): string {
  const why = existsSync(stateDir) ? `${stateDir} has no edgellm.db` : `${stateDir} does not exist`;
  return `no edgellm database: ${why}. Point --state-dir (or state_dir in --config) at the daemon's state_dir; the daemon creates the database when it first starts`;
}

/** Permission problems are the usual cause of a database that exists but cannot be opened or written. */
function accessHint(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  const text = String((err as Error).message);
  if (code === 'EACCES' || code === 'SQLITE_CANTOPEN' || code === 'SQLITE_READONLY' || /readonly|permission|unable to open/i.test(text)) {
    return ' (run as the daemon\'s user, e.g. sudo -u edgellm, or as root)';
  }
  return '';
}

function migrate(db: Db): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > migrations.length) {
    throw new EdgeError('E_STORE', `the database was written by a newer edgellm (schema ${version}, this one knows ${migrations.length}): upgrade edgellm or use another state_dir`);
  }
  for (let v = version; v < migrations.length; v++) {
    db.transaction(() => {
      db.exec(migrations[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}
