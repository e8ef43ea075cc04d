import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { PNG } from "pngjs";
import { loadConfig, Config } from "../../src/config";
import { createLogger } from "../../src/infra/logger";
import { startService, RunningService } from "../../src/service";

export interface TestStack {
  service: RunningService;
  config: Config;
  url: string;
  tmp: string;
  close(): Promise<void>;
}

/**
 * The real stack for integration tests: a private redis-server, a fresh SQLite file, the real Python runner(s) on the
 * tiny models. Each test file gets its own, so files cannot see each other's jobs.
 */
export async function startTestStack(env: Record<string, string> = {}, roles = { api: true, worker: true }): Promise<TestStack> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-test-"));
  const config = loadConfig({
    ...process.env,
    PORT: "0",
    HOST: "127.0.0.1",
    REDIS_URL: process.env.TEST_REDIS_URL ?? "",
    DATABASE_URL: `file:${path.join(tmp, "test.db")}`,
    PIXELAI_DATA_DIR: tmp,
    PIXELAI_QUEUE_PREFIX: `t${process.pid}${Date.now().toString(36)}`,
    PIXELAI_RUNNER_TIMEOUT_MS: "120000",
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "warn",
    ...env,
  });
  const logger = createLogger(config.logLevel);
  const service = await startService(config, { ...roles, durableRedis: false }, logger);
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

export async function waitFor<T>(fn: () => Promise<T | undefined | null | false>, timeoutMs = 120_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export function decodePng(buf: Buffer): { width: number; height: number; data: Buffer } {
  const png = PNG.sync.read(buf);
  return { width: png.width, height: png.height, data: png.data };
}

/** Distinct RGBA colours among pixels with alpha > 0. */
export function opaqueColours(img: { data: Buffer }): number {
  const seen = new Set<number>();
  for (let i = 0; i < img.data.length; i += 4) {
    if (img.data[i + 3] === 0) continue;
    seen.add(img.data.readUInt32BE(i));
  }
  return seen.size;
}
