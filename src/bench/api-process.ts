import { ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import type { MemorySample } from "./memory-probe";

export interface ApiProcess {
  url: string;
  pid: number;
  /** The API process's own memory after a forced GC (see memory-probe.ts). */
  memory(): Promise<MemorySample>;
  close(): Promise<void>;
}

/** A port the OS just handed out; the tiny window before the child binds it is acceptable for a bench. */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * `node dist/cli.js api` as its own process: the API role only, so no worker ever takes a job off its queue and
 * everything submitted stays queued. Measuring that process (not the bench's) keeps the bench's own buffers of ids and
 * samples out of the memory numbers. It gets its own SQLite file and queue prefix on the given Redis.
 */
export async function startApiProcess(opts: { redisUrl: string; queuePrefix: string; startTimeoutMs: number }): Promise<ApiProcess> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-bench-api-"));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(
    process.execPath,
    ["--expose-gc", "-r", path.join(__dirname, "memory-probe.js"), path.join(__dirname, "..", "cli.js"), "api"],
    {
      env: {
        ...process.env,
        PORT: String(port),
        HOST: "127.0.0.1",
        REDIS_URL: opts.redisUrl,
        DATABASE_URL: `file:${path.join(tmp, "api.db")}`,
        PIXELAI_DATA_DIR: tmp,
        PIXELAI_QUEUE_PREFIX: opts.queuePrefix,
        PIXELAI_ENGINES: "torch",
        PIXELAI_DEFAULT_ENGINE: "torch",
        PIXELAI_DEFAULT_MODEL: "tiny-sd",
        // One client IP submits 10 000 jobs in well under a minute: the per-IP limit would answer 429.
        PIXELAI_RATE_LIMIT_PER_MIN: "0",
        // ... and keeps them all queued at once: the per-client queued cap would answer 429 too.
        PIXELAI_MAX_QUEUED_PER_CLIENT: "0",
        LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? "warn",
      },
      stdio: ["ignore", "pipe", "pipe", "ipc"],
    },
  );
  // Keep the last output for error messages, and keep the pipes drained so the child never blocks on a full pipe.
  let tail = "";
  const keep = (chunk: Buffer) => (tail = (tail + chunk.toString()).slice(-4000));
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  let alive = true;
  void exited.then(() => (alive = false));

  const removeTmp = () => fs.rmSync(tmp, { recursive: true, force: true });
  const deadline = Date.now() + opts.startTimeoutMs;
  for (;;) {
    if (!alive) {
      removeTmp();
      throw new Error(`API process exited before it answered: ${tail}`);
    }
    const ok = await fetch(`${url}/health`).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      removeTmp();
      throw new Error(`API process did not answer /health within ${opts.startTimeoutMs} ms: ${tail}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    url,
    pid: child.pid ?? -1,
    memory: () =>
      new Promise<MemorySample>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("API process did not answer the memory probe")), 10_000);
        const onMessage = (msg: { memory?: MemorySample }) => {
          if (!msg?.memory) return;
          clearTimeout(timer);
          child.off("message", onMessage);
          resolve(msg.memory);
        };
        child.on("message", onMessage);
        child.send("memory");
      }),
    close: async () => {
      if (alive) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
        await exited;
        clearTimeout(timer);
      }
      removeTmp();
    },
  };
}
