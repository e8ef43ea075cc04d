import { ChildProcess, spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import type { Logger } from "./logger";

export interface ManagedRedis {
  url: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function redisServerBinary(): string {
  for (const candidate of [
    process.env.REDIS_SERVER_BIN,
    "/usr/bin/redis-server",
    "/usr/local/bin/redis-server",
    "/opt/homebrew/bin/redis-server",
  ]) {
    if (candidate && fs.existsSync(candidate)) return candidate;
  }
  try {
    return execFileSync("sh", ["-c", "command -v redis-server"]).toString().trim();
  } catch {
    throw new Error("redis-server not found: install it (apt-get install redis-server / brew install redis) or set REDIS_URL");
  }
}

/**
 * Starts a private redis-server on a free loopback port, used when REDIS_URL is unset. AOF keeps queued jobs across a
 * restart of the service; `durable: false` (tests) keeps everything in memory.
 */
export async function startManagedRedis(opts: {
  dataDir: string;
  durable: boolean;
  logger?: Logger;
  port?: number;
}): Promise<ManagedRedis> {
  const port = opts.port ?? (await freePort());
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", ""];
  if (opts.durable) {
    fs.mkdirSync(opts.dataDir, { recursive: true });
    args.push("--appendonly", "yes", "--dir", opts.dataDir);
  } else {
    args.push("--appendonly", "no");
  }
  const child: ChildProcess = spawn(redisServerBinary(), args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout?.on("data", (d) => (output += d.toString()));
  child.stderr?.on("data", (d) => (output += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const deadline = Date.now() + 10_000;
    const tryConnect = () => {
      if (child.exitCode !== null) return reject(new Error(`redis-server exited: ${output}`));
      const sock = net.connect(port, "127.0.0.1");
      sock.once("connect", () => {
        sock.destroy();
        resolve();
      });
      sock.once("error", () => {
        sock.destroy();
        if (Date.now() > deadline) reject(new Error(`redis-server did not listen on ${port}: ${output}`));
        else setTimeout(tryConnect, 50);
      });
    };
    tryConnect();
  });
  opts.logger?.info({ port, durable: opts.durable }, "managed redis-server started");
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}
