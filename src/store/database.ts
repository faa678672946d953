/**
 * The daemon's SQLite file (<state_dir>/edgellm.db): opened once, migrated forward, shared by the
 * requests, outbox and cache tables.
 *
 * journal_mode=WAL with synchronous=FULL: every commit fsyncs the WAL before it returns, so a request
 * whose PUBACK has left survives a power cut. NORMAL would only fsync at checkpoints and may lose the
 * last commits on power loss (the file stays consistent, but an acknowledged request would vanish).
 * Commits here are per request, not per token, so the fsync cost is small next to a generation.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { EdgeError } from '../errors.js';

export type Db = Database.Database;

/** Each entry moves the schema from version i to i + 1; never edit one that has shipped. */
const migrations: string[] = [
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
];

export function openDatabase(stateDir: string): Db {
  let db: Db;
  try {
    mkdirSync(stateDir, { recursive: true });
    db = new Database(join(stateDir, 'edgellm.db'));
  } catch (err) {
    throw new EdgeError('E_STORE', `cannot open the database in state_dir ${stateDir}: ${(err as Error).message}`, { cause: err });
  }
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('busy_timeout = 5000');
    migrate(db);
  } catch (err) {
    db.close();
    if (err instanceof EdgeError) throw err;
    throw new EdgeError('E_STORE', `cannot prepare the database in ${stateDir}: ${(err as Error).message}`, { cause: err });
  }
  return db;
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
