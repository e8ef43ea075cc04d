import { spawn } from "node:child_process";
import path from "node:path";
import fs from "node:fs";
import { databaseKind, SCHEMA_PATH } from "./database-kind";
import { sqliteMigrationsApplied } from "./sqlite-migrations";

/** What `migrate deploy` prints once everything is applied (or nothing was pending). */
const DEPLOYED = /All migrations have been successfully applied|No pending migrations to apply/;

/**
 * Applies the migrations of the provider DATABASE_URL names (prisma/migrations for SQLite, prisma/postgres/migrations for
 * PostgreSQL) with the Prisma CLI (`migrate deploy`, the JS schema engine: works offline). Several processes starting at
 * once is fine: on PostgreSQL migrate deploy holds an advisory lock, and a second run finds nothing left to apply.
 */
export async function applyMigrations(repoRoot: string, databaseUrl: string): Promise<void> {
  const kind = databaseKind(databaseUrl);
  if (kind !== "sqlite") return deploy(repoRoot, databaseUrl, kind);
  const file = path.resolve(repoRoot, databaseUrl.slice("file:".length));
  const migrations = path.join(repoRoot, path.dirname(SCHEMA_PATH[kind]), "migrations");
  fs.mkdirSync(path.dirname(file), { recursive: true });
  // The CLI fails on a SQLite file another process has open (an API next to a worker, a restarted `start`), even with
  // nothing to apply: skip it when every migration is recorded. Two processes starting on a fresh file race; the loser
  // fails with a lock error, so it waits for the winner's migrations to appear instead of failing the start.
  for (let attempt = 0; ; attempt++) {
    if (sqliteMigrationsApplied(file, migrations)) return;
    try {
      return await deploy(repoRoot, databaseUrl, kind);
    } catch (err) {
      if (attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, 250 + 250 * Math.min(attempt, 4)));
    }
  }
}

async function deploy(repoRoot: string, databaseUrl: string, kind: ReturnType<typeof databaseKind>): Promise<void> {
  const cli = path.join(repoRoot, "node_modules", "prisma", "build", "index.js");
  const child = spawn(process.execPath, [cli, "migrate", "deploy", "--schema", SCHEMA_PATH[kind]], {
    cwd: repoRoot,
    env: { ...process.env, DATABASE_URL: databaseUrl, PRISMA_HIDE_UPDATE_MESSAGE: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  let deployed = false;
  const onData = (d: Buffer) => {
    output += d.toString();
    // On PostgreSQL the CLI's wasm schema engine leaves a 10 s timer (its advisory-lock timeout) running after the work
    // is done, so the process would linger 10 s on every start. Once it reports success the migrations are committed;
    // ending it then only closes its idle connection.
    if (!deployed && DEPLOYED.test(output)) {
      deployed = true;
      child.kill("SIGTERM");
    }
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (c) => resolve(c));
  });
  if (!deployed && code !== 0) throw new Error(`prisma migrate deploy failed (exit ${code}):\n${output.slice(-4000)}`);
}
