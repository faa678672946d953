/**
 * Temporary grants in SQLite: `edgellm grant` writes them from its own process, and the daemon's
 * AccessControl reads them on every request. Nothing is cached here, so a grant or revoke committed
 * by another process is seen by the next request (each statement reads the newest WAL snapshot).
 */
import type { Grant, GrantStore } from '../policy/access.js';
import type { Db } from './database.js';

interface Row {
  device: string;
  role: string;
  granted_at: number;
  expires_at: number;
  granted_by: string | null;
}

const fromRow = (r: Row): Grant => ({
  device: r.device,
  role: r.role,
  granted_at: r.granted_at,
  expires_at: r.expires_at,
  ...(r.granted_by !== null ? { by: r.granted_by } : {}),
});

export class SqliteGrantStore implements GrantStore {
  private readonly addStmt;
  private readonly countStmt;
  private readonly deleteStmt;
  private readonly activeStmt;
  private readonly listStmt;
  private readonly expireStmt;
  private readonly revokeTx;

  constructor(db: Db) {
    this.addStmt = db.prepare<[string, string, number, number, string | null]>(
      `INSERT INTO grants (device, role, granted_at, expires_at, granted_by) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (device, role) DO UPDATE SET granted_at = excluded.granted_at, expires_at = excluded.expires_at, granted_by = excluded.granted_by`,
    );
    // role NULL matches every role of the device.
    this.countStmt = db.prepare<[string, string | null, string | null, number], { n: number }>(
      'SELECT count(*) AS n FROM grants WHERE device = ? AND (? IS NULL OR role = ?) AND expires_at > ?',
    );
    this.deleteStmt = db.prepare<[string, string | null, string | null]>('DELETE FROM grants WHERE device = ? AND (? IS NULL OR role = ?)');
    this.activeStmt = db.prepare<[string, number], Row>('SELECT * FROM grants WHERE device = ? AND expires_at > ? ORDER BY role');
    this.listStmt = db.prepare<[number], Row>('SELECT * FROM grants WHERE expires_at > ? ORDER BY device, role');
    this.expireStmt = db.prepare<[number]>('DELETE FROM grants WHERE expires_at <= ?');
    this.revokeTx = db.transaction((device: string, role: string | null, at: number): number => {
      const active = this.countStmt.get(device, role, role, at)!.n;
      this.deleteStmt.run(device, role, role);
      return active;
    });
  }

  /** A grant of a (device, role) that already has one replaces it (new expiry, new granter). */
  add(grant: Grant): void {
    this.addStmt.run(grant.device, grant.role, grant.granted_at, grant.expires_at, grant.by ?? null);
  }

  /** Deletes the device's grants of `role` (every role when undefined), expired ones too; returns how many were active at `at`. */
  revoke(device: string, role: string | undefined, at: number): number {
    return this.revokeTx(device, role ?? null, at);
  }

  active(device: string, at: number): Grant[] {
    return this.activeStmt.all(device, at).map(fromRow);
  }

  list(at: number): Grant[] {
    return this.listStmt.all(at).map(fromRow);
  }

  /** Forgets grants that expired at or before `at` (the audit log keeps their history); returns how many. */
  forgetExpired(at: number): number {
    return this.expireStmt.run(at).changes;
  }
}
