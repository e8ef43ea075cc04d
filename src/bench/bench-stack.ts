import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig, Config } from "../config";
import { createLogger } from "../infra/logger";
import { startService, RunningService } from "../service";

export interface BenchStack {
  service: RunningService;
  config: Config;
  url: string;
  close(): Promise<void>;
}

/**
 * The real service (API + worker + warm torch runner) in this process, on a private in-memory redis-server and a
 * throw-away SQLite file, so a bench run never touches the user's data/ or queue. Same shape as the integration-test
 * stack, without depending on jest. BENCH_REDIS_URL points it at an existing Redis instead.
 */
export async function startBenchStack(): Promise<BenchStack> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-bench-"));
  const config = loadConfig({
    ...process.env,
    PORT: "0",
    HOST: "127.0.0.1",
    REDIS_URL: process.env.BENCH_REDIS_URL ?? "",
    DATABASE_URL: `file:${path.join(tmp, "bench.db")}`,
    PIXELAI_DATA_DIR: tmp,
    PIXELAI_QUEUE_PREFIX: `bench${process.pid}${Date.now().toString(36)}`,
    // The bench is about the tiny model on the torch engine; a user's env must not add an MLX runner or another model.
    PIXELAI_ENGINES: "torch",
    PIXELAI_DEFAULT_ENGINE: "torch",
    PIXELAI_DEFAULT_MODEL: "tiny-sd",
    // 64 closed-loop clients submit faster than the default 600/min per IP: the bench measures the path, not the limit.
    PIXELAI_RATE_LIMIT_PER_MIN: "0",
    LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? "warn",
  });
  const service = await startService(config, { api: true, worker: true, durableRedis: false }, createLogger(config.logLevel));
  return {
    service,
    config,
    url: service.url ?? "",
    close: async () => {
      await service.close();
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
}
