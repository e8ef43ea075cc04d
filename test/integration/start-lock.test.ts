import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { freePort } from "../../src/infra/managed-redis";
import { LOCK_FILE } from "../../src/infra/start-lock";
import { waitFor } from "../support/stack";
import { CliProcess, ensureBuilt, isAlive } from "../support/processes";

/**
 * Real `node dist/cli.js` processes with a managed redis-server (REDIS_URL unset) and the real Torch runner, each on
 * its own temp data folder. Every process a start brings up (node, the Redis guard, redis-server, runners) inherits
 * PIXELAI_DATA_DIR, so "what this start left behind" is exactly the live processes whose environment names its folder.
 */
jest.setTimeout(240_000);

let root: string;
const processes: CliProcess[] = [];

beforeAll(() => {
  ensureBuilt();
  root = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-startlock-"));
});

afterAll(async () => {
  await Promise.all(processes.map((p) => p.stop("SIGKILL", 5_000)));
  // A failing test must not leave its Redis or runner behind either.
  for (const pid of processesOf(root)) process.kill(pid, "SIGKILL");
  fs.rmSync(root, { recursive: true, force: true });
});

/** Live (not zombie) processes whose environment holds PIXELAI_DATA_DIR under `dataDir`. */
function processesOf(dataDir: string): number[] {
  const found: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const vars = fs.readFileSync(`/proc/${entry}/environ`, "utf8").split("\0");
      if (vars.some((v) => v.startsWith(`PIXELAI_DATA_DIR=${dataDir}`)) && isAlive(Number(entry))) found.push(Number(entry));
    } catch {
      // gone while we looked, or not ours to read
    }
  }
  return found.sort((a, b) => a - b);
}

function commandOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
  } catch {
    return "";
  }
}

let n = 0;
async function env(): Promise<Record<string, string>> {
  const dataDir = path.join(root, `data${n++}`);
  return {
    PIXELAI_DATA_DIR: dataDir,
    REDIS_URL: "",
    DATABASE_URL: `file:${path.join(dataDir, "pixelai.db")}`,
    HOST: "127.0.0.1",
    PORT: String(await freePort()),
    PIXELAI_ENGINES: "torch",
    PIXELAI_QUEUE_PREFIX: `startlock${process.pid}`,
  };
}

function cli(args: string[], e: Record<string, string>): CliProcess {
  const p = new CliProcess(args, e, path.join(root, `cli-${processes.length}.log`));
  processes.push(p);
  return p;
}

/** Runs a command expected to be refused: its exit, wall time and output. */
async function refused(args: string[], e: Record<string, string>) {
  const t0 = Date.now();
  const p = cli(args, e);
  const { code } = await p.exited;
  return { code, ms: Date.now() - t0, output: p.output().trim(), pid: p.pid };
}

describe("start-up lock and clean failure", () => {
  it("refuses a second start (and a worker or API role) on the same data folder within a second, starting nothing", async () => {
    const e = await env();
    const first = cli(["start"], e);
    await first.waitForLog("API listening");
    const lockFile = path.join(e.PIXELAI_DATA_DIR, LOCK_FILE);
    const lock = JSON.parse(fs.readFileSync(lockFile, "utf8"));
    expect(lock).toMatchObject({ pid: first.pid, port: Number(e.PORT), host: "127.0.0.1", role: "start" });
    expect(Number.isNaN(Date.parse(lock.startedAt))).toBe(false);
    const running = processesOf(e.PIXELAI_DATA_DIR);
    // node itself, the Redis guard with its watcher, redis-server and the torch runner
    expect(running.some((pid) => commandOf(pid).includes("redis-server"))).toBe(true);
    expect(running.some((pid) => commandOf(pid).includes("pixelai_runner"))).toBe(true);

    const message = `already running at http://127.0.0.1:${e.PORT} (pid ${first.pid}); stop it first or set PIXELAI_DATA_DIR / PORT`;
    for (const args of [["start"], ["worker"], ["api", "--port", String(await freePort())]]) {
      const second = await refused(args, e);
      expect({ args, code: second.code, output: second.output }).toEqual({ args, code: 1, output: message });
      expect(second.ms).toBeLessThan(1_000);
    }
    // Nothing new runs for that folder, the first start is untouched and still holds the lock.
    expect(processesOf(e.PIXELAI_DATA_DIR)).toEqual(running);
    expect(JSON.parse(fs.readFileSync(lockFile, "utf8"))).toEqual(lock);
    expect((await fetch(`http://127.0.0.1:${e.PORT}/health`)).status).toBe(200);

    // A graceful stop releases the lock and takes everything with it.
    expect(await first.stop("SIGTERM")).toEqual({ code: 0, signal: null });
    expect(fs.existsSync(lockFile)).toBe(false);
    expect(processesOf(e.PIXELAI_DATA_DIR)).toEqual([]);
  });

  it("refuses a start on a busy port before starting anything, naming the process that holds it", async () => {
    const e = await env();
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(Number(e.PORT), "127.0.0.1", resolve));
    try {
      const result = await refused(["start"], e);
      expect(result.code).toBe(1);
      // The port is held by this test process, which /proc lets us name.
      expect(result.output).toMatch(
        new RegExp(`^port ${e.PORT} on 127\\.0\\.0\\.1 is already in use by pid ${process.pid} \\(.*node.*\\); stop it first or set PORT$`),
      );
      expect(result.ms).toBeLessThan(1_000);
      expect(processesOf(e.PIXELAI_DATA_DIR)).toEqual([]);
      expect(fs.existsSync(path.join(e.PIXELAI_DATA_DIR, LOCK_FILE))).toBe(false);
      expect(fs.existsSync(path.join(e.PIXELAI_DATA_DIR, "redis"))).toBe(false); // Redis never started
    } finally {
      await new Promise((r) => holder.close(r));
    }
  });

  it("stops Redis and the runner it had started when the port is taken while it starts, then exits non-zero", async () => {
    const e = await env();
    const p = cli(["start"], e);
    await p.waitForLog("managed redis-server started");
    // Past the port check: the listen at the end of the start is what fails now, after the runner came up.
    const thief = net.createServer();
    await new Promise<void>((resolve) => thief.listen(Number(e.PORT), "127.0.0.1", resolve));
    try {
      const seen = new Set<string>();
      const watch = setInterval(() => processesOf(e.PIXELAI_DATA_DIR).forEach((pid) => seen.add(commandOf(pid))), 100);
      const { code } = await p.exited;
      clearInterval(watch);
      expect(code).toBe(1);
      const out = p.output();
      expect(out).toContain("EADDRINUSE");
      // It stopped them itself, Redis last, before it exited (not merely orphaned them to die of a closed pipe).
      const order = [
        "start failed; stopping what it had started",
        "managed redis-server stopped",
        "stopped what the failed start had started",
      ];
      expect(order.map((line) => out.indexOf(line))).toEqual(order.map((line) => out.indexOf(line)).sort((a, b) => a - b));
      expect(order.every((line) => out.includes(line))).toBe(true);
      expect([...seen].some((c) => c.includes("pixelai_runner"))).toBe(true);
      expect([...seen].some((c) => c.includes("redis-server"))).toBe(true);
      // Nothing of it is left the moment it is gone.
      expect(processesOf(e.PIXELAI_DATA_DIR)).toEqual([]);
      expect(fs.existsSync(path.join(e.PIXELAI_DATA_DIR, LOCK_FILE))).toBe(false);
    } finally {
      await new Promise((r) => thief.close(r));
    }
  });

  it("leaves no redis-server or runner behind when killed with SIGKILL, and the next start takes its lock over", async () => {
    const e = await env();
    const first = cli(["start"], e);
    await first.waitForLog("API listening");
    const children = processesOf(e.PIXELAI_DATA_DIR).filter((pid) => pid !== first.pid);
    expect(children.map(commandOf).filter((c) => c.includes("redis-server") || c.includes("pixelai_runner")).length).toBeGreaterThanOrEqual(
      2,
    );

    await first.stop("SIGKILL");
    const t0 = Date.now();
    await waitFor(async () => processesOf(e.PIXELAI_DATA_DIR).length === 0, 5_000, 50);
    const goneMs = Date.now() - t0;
    expect(goneMs).toBeLessThan(5_000);
    // The lock outlived its holder; its pid is gone now, so a new start takes it over.
    expect(JSON.parse(fs.readFileSync(path.join(e.PIXELAI_DATA_DIR, LOCK_FILE), "utf8")).pid).toBe(first.pid);
    const second = cli(["start"], e);
    await second.waitForLog("API listening");
    expect(JSON.parse(fs.readFileSync(path.join(e.PIXELAI_DATA_DIR, LOCK_FILE), "utf8")).pid).toBe(second.pid);
    expect(await second.stop("SIGTERM")).toEqual({ code: 0, signal: null });
    expect(processesOf(e.PIXELAI_DATA_DIR)).toEqual([]);
  });
});
