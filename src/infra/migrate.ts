import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import fs from "node:fs";

const run = promisify(execFile);

/** Applies prisma/migrations with the Prisma CLI (`migrate deploy`, the JS schema engine: works offline). */
export async function applyMigrations(repoRoot: string, databaseUrl: string): Promise<void> {
  if (databaseUrl.startsWith("file:")) {
    const file = databaseUrl.slice("file:".length);
    fs.mkdirSync(path.dirname(path.resolve(repoRoot, file)), { recursive: true });
  }
  const cli = path.join(repoRoot, "node_modules", "prisma", "build", "index.js");
  await run(process.execPath, [cli, "migrate", "deploy"], {
    cwd: repoRoot,
    env: { ...process.env, DATABASE_URL: databaseUrl, PRISMA_HIDE_UPDATE_MESSAGE: "1" },
  });
}
