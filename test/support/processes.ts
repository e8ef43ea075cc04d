import { ChildProcess, execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { freePort } from "../../src/infra/managed-redis";

export const REPO = path.resolve(__dirname, "../..");

/** Newest mtime under a folder (files only). */
function newest(dir: string, filter: (f: string) => boolean): number {
  let max = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) max = Math.max(max, newest(p, filter));
    else if (filter(p)) max = Math.max(max, fs.statSync(p).mtimeMs);
  }
  return max;
}

/**
 * The process-level tests run `node dist/cli.js`; `make test` builds first, but a developer running jest directly may
 * have a stale dist. Rebuild when any non-generated source is newer than dist/cli.js.
 */
export function ensureBuilt(): void {
  const cli = path.join(REPO, "dist", "cli.js");
  const src = newest(
    path.join(REPO, "src"),
    (f) => f.endsWith(".ts") && !f.includes(`${path.sep}generated${path.sep}`) && !f.endsWith(".spec.ts"),
  );
  if (fs.existsSync(cli) && fs.statSync(cli).mtimeMs >= src) return;
  execFileSync("npm", ["run", "--silent", "build"], { cwd: REPO, stdio: "ignore" });
}

/** A redis-server the test owns, restartable on the same port and data dir (AOF optional). */
export class TestRedis {
  child: ChildProcess | undefined;
  private constructor(
    readonly port: number,
    readonly dir: string,
    readonly aof: boolean,
  ) {}

  static async start(dir: string, aof: boolean): Promise<TestRedis> {
    fs.mkdirSync(dir, { recursive: true });
    const r = new TestRedis(await freePort(), dir, aof);
    await r.up();
    return r;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async up(): Promise<void> {
    const args = [
      "--port",
      String(this.port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--dir",
      this.dir,
      "--appendonly",
      this.aof ? "yes" : "no",
    ];
    this.child = spawn("redis-server", args, { stdio: "ignore" });
    await waitForPort(this.port, 10_000);
  }

  /** SIGTERM: redis flushes its AOF and exits, as a restart by an operator or a service manager would. */
  async down(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.kill(signal);
    });
  }
}

export async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One `node dist/cli.js …` process with its output kept in a log file (read on failure, scanned for markers). */
export class CliProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly log: fs.WriteStream;

  constructor(
    args: string[],
    env: Record<string, string>,
    readonly logFile: string,
  ) {
    this.log = fs.createWriteStream(logFile, { flags: "a" });
    this.child = spawn(process.execPath, [path.join(REPO, "dist", "cli.js"), ...args], {
      cwd: REPO,
      env: { ...process.env, LOG_LEVEL: "info", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.stdout!.pipe(this.log, { end: false });
    this.child.stderr!.pipe(this.log, { end: false });
    this.exited = new Promise((resolve) => this.child.once("exit", (code, signal) => resolve({ code, signal })));
  }

  get pid(): number {
    return this.child.pid!;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  output(): string {
    return fs.existsSync(this.logFile) ? fs.readFileSync(this.logFile, "utf8") : "";
  }

  /** Resolves once the log has a line containing `marker` (e.g. "generation worker started"). */
  async waitForLog(marker: string, timeoutMs = 90_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.output().includes(marker)) {
      if (!this.alive) throw new Error(`process exited before "${marker}":\n${this.output().slice(-3000)}`);
      if (Date.now() > deadline) throw new Error(`no "${marker}" within ${timeoutMs} ms:\n${this.output().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 60_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.alive) this.child.kill(signal);
    const timer = setTimeout(() => this.alive && this.child.kill("SIGKILL"), timeoutMs);
    const result = await this.exited;
    clearTimeout(timer);
    this.log.end();
    return result;
  }
}

/** Direct children of a process, from /proc (Linux): the runner(s) a worker spawned. */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // the process went away while we looked
    }
  }
  return out;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
