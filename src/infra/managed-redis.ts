import { ChildProcess, spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import type { Logger } from "./logger";

export interface ManagedRedis {
  url: string;
  /** The guard process (see GUARD); redis-server is its only child. */
  pid: number;
  /** Stops Redis (it writes its AOF first) and resolves once it has exited; safe to call more than once. */
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

/** `preferred` is Config's redisServerBin (REDIS_SERVER_BIN); then the usual install locations, then PATH. */
function redisServerBinary(preferred?: string): string {
  for (const candidate of [preferred, "/usr/bin/redis-server", "/usr/local/bin/redis-server", "/opt/homebrew/bin/redis-server"]) {
    if (candidate && fs.existsSync(candidate)) return candidate;
  }
  try {
    return execFileSync("sh", ["-c", "command -v redis-server"]).toString().trim();
  } catch {
    throw new Error("redis-server not found: install it (apt-get install redis-server / brew install redis) or set REDIS_URL");
  }
}

/**
 * The managed redis-server runs under this POSIX sh guard so that it never outlives the node process that started it,
 * even one killed with SIGKILL (no exit handler runs then, and Node cannot ask Linux for PR_SET_PDEATHSIG): node holds
 * the write end of the guard's stdin; when that pipe reaches EOF (node closed it to stop Redis, or node died) the
 * guard sends redis-server SIGTERM, which makes it flush its AOF and exit. The guard exits with Redis's own status, so
 * a Redis that fails to start still surfaces as an exit. Works with dash, bash and the macOS /bin/sh alike.
 */
const GUARD = `
redis_bin=$1; shift
exec 3<&0
"$redis_bin" "$@" </dev/null 3<&- &
redis=$!
( while read -r _ <&3; do :; done; kill -TERM "$redis" 2>/dev/null ) &
watcher=$!
exec 3<&-
trap 'kill -TERM "$redis" 2>/dev/null' TERM INT HUP
wait "$redis"; status=$?
while kill -0 "$redis" 2>/dev/null; do wait "$redis"; status=$?; done
kill "$watcher" 2>/dev/null
exit "$status"
`;

/** How long a stopping redis-server may take to write its AOF before the guard and Redis are killed outright. */
const STOP_GRACE_MS = 15_000;

/**
 * Starts a private redis-server on a free loopback port, used when REDIS_URL is unset. AOF keeps queued jobs across a
 * restart of the service; `durable: false` (tests) keeps everything in memory. It runs in its own process group, so a
 * Ctrl-C in the terminal reaches only node, which stops Redis last, after the workers have handed their jobs back.
 */
export async function startManagedRedis(opts: {
  dataDir: string;
  durable: boolean;
  logger?: Logger;
  port?: number;
  /** redis-server to run (Config.redisServerBin); found on the usual paths when absent. */
  serverBin?: string;
}): Promise<ManagedRedis> {
  const port = opts.port ?? (await freePort());
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", ""];
  if (opts.durable) {
    fs.mkdirSync(opts.dataDir, { recursive: true });
    args.push("--appendonly", "yes", "--dir", opts.dataDir);
  } else {
    args.push("--appendonly", "no");
  }
  const child: ChildProcess = spawn("/bin/sh", ["-c", GUARD, "redis-guard", redisServerBinary(opts.serverBin), ...args], {
    stdio: ["pipe", "pipe", "pipe"],
    detached: true,
  });
  // The guard may already be gone when we close its stdin; EPIPE there must not crash the service.
  child.stdin?.on("error", () => undefined);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let output = "";
  child.stdout?.on("data", (d) => (output += d.toString()));
  child.stderr?.on("data", (d) => (output += d.toString()));

  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.stdin?.end();
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // the group is already gone
      }
    }, STOP_GRACE_MS);
    await exited;
    clearTimeout(timer);
    opts.logger?.info({ port }, "managed redis-server stopped");
  };

  try {
    await waitUntilListening(child, port, () => output);
  } catch (err) {
    await stop();
    throw err;
  }
  opts.logger?.info({ port, durable: opts.durable, pid: child.pid }, "managed redis-server started");
  return { url: `redis://127.0.0.1:${port}`, pid: child.pid!, stop };
}

/**
 * Ready once our redis-server says so and its port answers. The log line matters: a port that answers could belong to
 * another process while ours is failing to bind it.
 */
function waitUntilListening(child: ChildProcess, port: number, output: () => string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const deadline = Date.now() + 10_000;
    const tryConnect = () => {
      if (child.exitCode !== null || child.signalCode !== null) return reject(new Error(`redis-server exited: ${output()}`));
      if (!output().includes("Ready to accept connections")) {
        if (Date.now() > deadline) return reject(new Error(`redis-server did not become ready on ${port}: ${output()}`));
        return void setTimeout(tryConnect, 50);
      }
      const sock = net.connect(port, "127.0.0.1");
      sock.once("connect", () => {
        sock.destroy();
        resolve();
      });
      sock.once("error", () => {
        sock.destroy();
        if (Date.now() > deadline) reject(new Error(`redis-server did not listen on ${port}: ${output()}`));
        else setTimeout(tryConnect, 50);
      });
    };
    tryConnect();
  });
}
