import { PNG } from "pngjs";
import { startIsolatedService, IsolatedService } from "../../src/isolated-service";

export type TestStack = IsolatedService;

/**
 * The real stack for integration tests: a private redis-server, a fresh SQLite file, the real Python runner(s) on the
 * tiny models. Each test file gets its own, so files cannot see each other's jobs.
 */
export function startTestStack(env: Record<string, string> = {}, roles = { api: true, worker: true }): Promise<TestStack> {
  return startIsolatedService({
    label: "test",
    redisUrl: process.env.TEST_REDIS_URL,
    logLevel: process.env.TEST_LOG_LEVEL,
    roles,
    env: { PIXELAI_RUNNER_TIMEOUT_MS: "120000", ...env },
  });
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
