import fs from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";

/**
 * True when every migration folder is recorded as applied in the SQLite file. `prisma migrate deploy` (JS schema
 * engine) fails with a busy database whenever another process has the file open — an API and a worker sharing one
 * SQLite file, or a worker restarted next to running ones — even with nothing to apply; so the caller skips the CLI
 * when this says there is nothing to do (the common case for every process but the first).
 */
export function sqliteMigrationsApplied(file: string, migrationsDir: string): boolean {
  if (!fs.existsSync(file)) return false;
  const wanted = fs
    .readdirSync(migrationsDir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && fs.existsSync(path.join(migrationsDir, d.name, "migration.sql")))
    .map((d) => d.name);
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const table = db.prepare("SELECT name FROM sqlite_master WHERE type='table' AND name='_prisma_migrations'").get();
    if (!table) return false;
    const rows = db
      .prepare("SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL")
      .all() as Array<{ migration_name: string }>;
    const applied = new Set(rows.map((r) => r.migration_name));
    return wanted.every((name) => applied.has(name));
  } finally {
    db.close();
  }
}
