import { execFile } from "node:child_process";
import path from "node:path";

const repoRoot = path.resolve(__dirname, "..", "..");
const cli = path.join(repoRoot, "node_modules", "prisma", "build", "index.js");

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the repository's Prisma CLI against `databaseUrl` (prisma.config.ts picks the adapter from it). Resolves with the
 * exit code instead of throwing: `migrate diff --exit-code` answers 0 (same) or 2 (different).
 */
export function prisma(args: string[], databaseUrl: string): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [cli, ...args],
      {
        cwd: repoRoot,
        maxBuffer: 16 * 1024 * 1024,
        // The query-engine variable keeps the CLI from looking for a native engine it would try to download.
        env: { ...process.env, DATABASE_URL: databaseUrl, PRISMA_HIDE_UPDATE_MESSAGE: "1", PRISMA_QUERY_ENGINE_LIBRARY: "/dev/null" },
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === "number" ? (err as { code: number }).code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
