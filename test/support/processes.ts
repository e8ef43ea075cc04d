import { ChildProcess, execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const repoRoot = path.resolve(__dirname, "..", "..");

/** Newest modification time of the files under `dir` (recursively). */
function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(full) : fs.statSync(full).mtimeMs);
  }
  return newest;
}

/**
 * Tests that start `node dist/cli.js` need a dist/ that matches src/. `make test` builds first (scripts/setup.sh), so this
 * is normally a no-op; run alone after an edit, it rebuilds (`npm run build`, ~30 s) rather than test stale code.
 */
export function ensureBuilt(): void {
  const cli = path.join(repoRoot, "dist", "cli.js");
  const sources = Math.max(newestMtime(path.join(repoRoot, "src")), newestMtime(path.join(repoRoot, "prisma")));
  if (fs.existsSync(cli) && fs.statSync(cli).mtimeMs >= sources) return;
  execFileSync("npm", ["run", "--silent", "build"], { cwd: repoRoot, stdio: ["ignore", "ignore", "inherit"] });
}

export interface ServerProcess {
  name: string;
  child: ChildProcess;
  /** Everything it printed so far (pino JSON lines on stdout, errors on stderr). */
  output(): string;
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Starts `node dist/cli.js <role>` as its own process, the way a machine in docker-compose.yml runs it. */
export function startCli(name: string, role: "api" | "worker" | "start", env: Record<string, string>): ServerProcess {
  const child = spawn(process.execPath, [path.join(repoRoot, "dist", "cli.js"), role], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (d) => (out += d.toString()));
  child.stderr?.on("data", (d) => (out += d.toString()));
  return {
    name,
    child,
    output: () => out,
    waitForOutput: (pattern, timeoutMs = 120_000) =>
      new Promise<void>((resolve, reject) => {
        const deadline = Date.now() + timeoutMs;
        const check = () => {
          if (pattern.test(out)) return resolve();
          if (child.exitCode !== null) return reject(new Error(`${name} exited (${child.exitCode}) before ${pattern}:\n${out.slice(-3000)}`));
          if (Date.now() > deadline) return reject(new Error(`${name}: no ${pattern} within ${timeoutMs} ms:\n${out.slice(-3000)}`));
          setTimeout(check, 100);
        };
        check();
      }),
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        // SIGTERM is the graceful path (cli.ts closes API, worker, runners); SIGKILL only if that hangs.
        const force = setTimeout(() => child.kill("SIGKILL"), 20_000);
        child.once("exit", () => {
          clearTimeout(force);
          resolve();
        });
        child.kill("SIGTERM");
      }),
  };
}
