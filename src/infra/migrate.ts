import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import fs from "node:fs";
import { databaseKind, SCHEMA_PATH } from "./database-kind";
import { sqliteMigrationsApplied } from "./sqlite-migrations";

const run = promisify(execFile);

/**
 * Applies the migrations of the provider DATABASE_URL names (prisma/migrations for SQLite, prisma/postgres/migrations for
 * PostgreSQL) with the Prisma CLI (`migrate deploy`, the JS schema engine: works offline). Several processes starting at
 * once is fine: on PostgreSQL migrate deploy holds an advisory lock, and a second run finds nothing left to apply.
 */
export async function applyMigrations(repoRoot: string, databaseUrl: string): Promise<void> {
  const kind = databaseKind(databaseUrl);
  if (kind === "sqlite") {
    const file = databaseUrl.slice("file:".length);
    fs.mkdirSync(path.dirname(path.resolve(repoRoot, file)), { recursive: true });
    // the CLI fails on a SQLite file another process has open, even with nothing to apply: skip it then
    if (sqliteMigrationsApplied(path.resolve(repoRoot, file), path.join(repoRoot, path.dirname(SCHEMA_PATH[kind]), "migrations"))) return;
  }
  const cli = path.join(repoRoot, "node_modules", "prisma", "build", "index.js");
  await run(process.execPath, [cli, "migrate", "deploy", "--schema", SCHEMA_PATH[kind]], {
    cwd: repoRoot,
    env: { ...process.env, DATABASE_URL: databaseUrl, PRISMA_HIDE_UPDATE_MESSAGE: "1" },
  });
}
