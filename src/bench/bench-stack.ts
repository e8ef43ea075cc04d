import { startIsolatedService, IsolatedService } from "../isolated-service";

export type BenchStack = IsolatedService;

/**
 * The real service (API + worker + warm torch runner) in this process on throw-away state (isolated-service.ts), so a
 * bench run never touches the user's data/ or queue. BENCH_REDIS_URL points it at an existing Redis instead.
 */
export function startBenchStack(): Promise<BenchStack> {
  return startIsolatedService({
    label: "bench",
    redisUrl: process.env.BENCH_REDIS_URL,
    logLevel: process.env.BENCH_LOG_LEVEL,
    env: {
      // The bench is about the tiny model on the torch engine; a user's env must not add an MLX runner or another model.
      PIXELAI_ENGINES: "torch",
      PIXELAI_DEFAULT_ENGINE: "torch",
      PIXELAI_DEFAULT_MODEL: "tiny-sd",
      // Every feature on, the rate limiter included, but with a budget 64 closed-loop clients on one IP never exhaust
      // (the default 600/min would): the bench measures the limiter's cost on the path, not the limit.
      PIXELAI_RATE_LIMIT_PER_MIN: "10000000",
    },
  });
}
