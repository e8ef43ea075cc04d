import path from "node:path";

/** Every environment variable the server reads, in one place (docker-compose.yml and README list the same names). */
export interface Config {
  host: string;
  port: number;
  databaseUrl: string;
  redisUrl: string | undefined;
  redisDataDir: string;
  repoRoot: string;
  modelsRoot: string;
  lorasRoot: string;
  dataDir: string;
  python: string;
  defaultModel: string;
  defaultEngine: "torch" | "mlx";
  engines: Array<"torch" | "mlx">;
  workerConcurrency: number;
  apiKey: string | undefined;
  allowedHosts: string[];
  runnerTimeoutMs: number;
  runnerStartTimeoutMs: number;
  runnerMaxRestarts: number;
  jobAttempts: number;
  logLevel: string;
  queuePrefix: string;
}

function int(value: string | undefined, fallback: number): number {
  if (value === undefined || value === "") return fallback;
  const n = Number.parseInt(value, 10);
  if (!Number.isFinite(n)) throw new Error(`expected an integer, got ${JSON.stringify(value)}`);
  return n;
}

function engineName(value: string | undefined, fallback: "torch" | "mlx"): "torch" | "mlx" {
  if (!value) return fallback;
  if (value !== "torch" && value !== "mlx") throw new Error(`unknown engine ${JSON.stringify(value)} (torch|mlx)`);
  return value;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const repoRoot = path.resolve(__dirname, "..");
  const dataDir = path.resolve(repoRoot, env.PIXELAI_DATA_DIR ?? "data");
  const port = int(env.PORT, 5000);
  const host = env.HOST ?? "127.0.0.1";
  const engines = (env.PIXELAI_ENGINES ?? "torch,mlx")
    .split(",")
    .map((e) => e.trim())
    .filter(Boolean)
    .map((e) => engineName(e, "torch"));
  return {
    host,
    port,
    databaseUrl: env.DATABASE_URL ?? `file:${path.join(dataDir, "pixelai.db")}`,
    redisUrl: env.REDIS_URL || undefined,
    redisDataDir: path.join(dataDir, "redis"),
    repoRoot,
    modelsRoot: path.resolve(repoRoot, env.PIXELAI_MODELS_DIR ?? "models"),
    lorasRoot: path.resolve(repoRoot, env.PIXELAI_LORAS_DIR ?? "loras"),
    dataDir,
    python: env.PIXELAI_PYTHON ?? path.join(repoRoot, ".venv", "bin", "python"),
    defaultModel: env.PIXELAI_DEFAULT_MODEL ?? "tiny-sd",
    defaultEngine: engineName(env.PIXELAI_DEFAULT_ENGINE, "torch"),
    engines,
    workerConcurrency: int(env.PIXELAI_WORKER_CONCURRENCY, 1),
    apiKey: env.PIXELAI_API_KEY || undefined,
    allowedHosts: (env.PIXELAI_ALLOWED_HOSTS ?? `localhost,127.0.0.1,[::1],${host}`)
      .split(",")
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean),
    runnerTimeoutMs: int(env.PIXELAI_RUNNER_TIMEOUT_MS, 300_000),
    runnerStartTimeoutMs: int(env.PIXELAI_RUNNER_START_TIMEOUT_MS, 120_000),
    runnerMaxRestarts: int(env.PIXELAI_RUNNER_MAX_RESTARTS, 5),
    jobAttempts: int(env.PIXELAI_JOB_ATTEMPTS, 2),
    logLevel: env.LOG_LEVEL ?? "info",
    queuePrefix: env.PIXELAI_QUEUE_PREFIX ?? "pixelai",
  };
}
