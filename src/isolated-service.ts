import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig, Config } from "./config";
import { createLogger } from "./infra/logger";
import { startService, RunningService, ServiceOptions } from "./service";

export interface IsolatedService {
  service: RunningService;
  config: Config;
  url: string;
  /** The private folder holding its SQLite file (and any other data). */
  tmp: string;
  close(): Promise<void>;
}

/**
 * The real service in this process on throw-away state: a fresh SQLite file in a temp folder, a private in-memory
 * redis-server (unless `redisUrl` names one) and its own queue prefix, on 127.0.0.1 with a free port. The integration
 * tests and the bench both run on it, so neither can touch a user's data/ or queues.
 */
export async function startIsolatedService(opts: {
  label: string;
  env?: Record<string, string>;
  redisUrl?: string;
  logLevel?: string;
  roles?: Pick<ServiceOptions, "api" | "worker">;
}): Promise<IsolatedService> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `pixelai-${opts.label}-`));
  const config = loadConfig({
    ...process.env,
    PORT: "0",
    HOST: "127.0.0.1",
    REDIS_URL: opts.redisUrl ?? "",
    DATABASE_URL: `file:${path.join(tmp, `${opts.label}.db`)}`,
    PIXELAI_DATA_DIR: tmp,
    PIXELAI_QUEUE_PREFIX: `${opts.label}${process.pid}${Date.now().toString(36)}`,
    LOG_LEVEL: opts.logLevel ?? "warn",
    ...opts.env,
  });
  const roles = opts.roles ?? { api: true, worker: true };
  const service = await startService(config, { ...roles, durableRedis: false }, createLogger(config.logLevel));
  return {
    service,
    config,
    url: service.url ?? "",
    tmp,
    close: async () => {
      await service.close();
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
}
