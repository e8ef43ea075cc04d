import path from "node:path";
import type { RunnerSettings } from "./backends/runner-contract";
import { ENGINE_NAMES, EngineName, isEngineName } from "./backends/engine-names";

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
  defaultEngine: EngineName;
  engines: EngineName[];
  workerConcurrency: number;
  apiKey: string | undefined;
  allowedHosts: string[];
  allowedOrigins: string[];
  runnerTimeoutMs: number;
  runnerStartTimeoutMs: number;
  runnerMaxRestarts: number;
  jobAttempts: number;
  /** BullMQ job lock: a worker that stops renewing it (killed, frozen) loses the job after this long. */
  lockDurationMs: number;
  /** How often live workers look for jobs whose lock expired and hand them back to the queue. */
  stalledIntervalMs: number;
  /** Stalls (worker lost mid-job) a job survives before BullMQ fails it; not an attempt, as it is not the job's fault. */
  maxStalledCount: number;
  /** Wall-clock budget of one attempt on a runner; past it the job fails with TIMEOUT and the runner is freed. */
  jobTimeoutMs: number;
  /** After a cancel (timeout, shutdown) the runner has this long to stop before it is killed and restarted. */
  cancelGraceMs: number;
  /** Model bytes all runners of a worker may hold together (0: no budget), and the idle time before an unload (0: never). */
  memoryBudgetMb: number;
  idleUnloadS: number;
  /** SIGTERM: how long an active job may run on before it is handed back to the queue. */
  shutdownGraceMs: number;
  /** A worker idle while jobs wait, with Redis connected, for this long is recreated (see worker-watchdog.ts). */
  workerWatchdogMs: number;
  /** Submissions (POST /jobs, POST /generate, WS submit) per client IP per minute; 0 turns the limit off. */
  rateLimitPerMin: number;
  /** The WebSocket's own limits (src/api/ws/ws-limits.ts says why each exists). */
  ws: WsLimits;
  /** Jobs one client (admin key, else IP) may have queued or running at once; more answer 429 TOO_MANY_QUEUED. 0: no cap. */
  maxQueuedPerClient: number;
  /** Largest width × height × steps of one job; more answers 400 JOB_TOO_LARGE. 0: no bound. */
  maxPixelSteps: number;
  /** A job naming an uninstalled hub model or LoRA starts (or joins) its install and waits; off: 409 MODEL_NOT_INSTALLED. */
  autoInstallModels: boolean;
  logLevel: string;
  /** redis-server binary for the managed Redis (REDIS_SERVER_BIN); unset = the usual install locations, then PATH. */
  redisServerBin: string | undefined;
  queuePrefix: string;
  /** What every runner is started with, besides its engine (command-line options; the runner reads no variables). */
  runner: Omit<RunnerSettings, "engine">;
  /** GET /jobs/{id}/events: a comment line this often keeps proxies and idle timeouts from closing the stream. */
  sseHeartbeatMs: number;
  /** Retention (src/jobs/retention.ts): completed jobs' images older than this many hours are pruned; 0 = no limit. */
  retentionMaxAgeHours: number;
  /** Retention: only the newest this many completed images are kept; 0 = no limit. Job records always stay. */
  retentionMaxImages: number;
}

export interface WsLimits {
  /** Open /ws connections per client IP; one more is closed at once with close code 4029. */
  maxConnectionsPerClient: number;
  /** Jobs one connection follows at once (submitted, subscribed to, cancelled); past it: TOO_MANY_WATCHES. */
  maxWatchesPerConnection: number;
  /** Bytes queued for a client that does not read; past it the server stops sending and closes with 4008. */
  maxBufferedBytes: number;
  /** `subscribe` and `engines` frames per client IP per minute (one budget, apart from submissions); 0 = off. */
  rateLimitPerMin: number;
  /** Encoded `completed` frames kept for reuse (bytes, least recently used out); 0 = none kept. */
  frameCacheBytes: number;
}

// Exhaustive (satisfies Record<…>): a value added to the runner contract must be added here too, or this fails to compile.
const DEVICES = { auto: 1, cuda: 1, mps: 1, cpu: 1 } satisfies Record<NonNullable<RunnerSettings["device"]>, 1>;
const MLX_DTYPES = { auto: 1, float16: 1, float32: 1, bfloat16: 1 } satisfies Record<NonNullable<RunnerSettings["mlxDtype"]>, 1>;

function oneOf<T extends string>(name: string, value: string | undefined, options: Record<T, 1>, fallback: T): T {
  if (value === undefined || value === "") return fallback;
  if (!Object.prototype.hasOwnProperty.call(options, value)) {
    throw new Error(`${name} must be one of ${Object.keys(options).join(", ")}, got ${JSON.stringify(value)}`);
  }
  return value as T;
}

function int(value: string | undefined, fallback: number): number {
  if (value === undefined || value === "") return fallback;
  const n = Number.parseInt(value, 10);
  if (!Number.isFinite(n)) throw new Error(`expected an integer, got ${JSON.stringify(value)}`);
  return n;
}

function engineName(value: string | undefined, fallback: EngineName): EngineName {
  if (!value) return fallback;
  if (!isEngineName(value)) throw new Error(`unknown engine ${JSON.stringify(value)} (${ENGINE_NAMES.join("|")})`);
  return value;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const repoRoot = path.resolve(__dirname, "..");
  const dataDir = path.resolve(repoRoot, env.PIXELAI_DATA_DIR ?? "data");
  const port = int(env.PORT, 5000);
  const host = env.HOST ?? "127.0.0.1";
  const modelsRoot = path.resolve(repoRoot, env.PIXELAI_MODELS_DIR ?? "models");
  const lorasRoot = path.resolve(repoRoot, env.PIXELAI_LORAS_DIR ?? "loras");
  const engines = (env.PIXELAI_ENGINES ?? ENGINE_NAMES.join(","))
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
    modelsRoot,
    lorasRoot,
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
    allowedOrigins: (env.PIXELAI_ALLOWED_ORIGINS ?? "")
      .split(",")
      .map((o) => o.trim())
      .filter(Boolean),
    runnerTimeoutMs: int(env.PIXELAI_RUNNER_TIMEOUT_MS, 300_000),
    runnerStartTimeoutMs: int(env.PIXELAI_RUNNER_START_TIMEOUT_MS, 120_000),
    runnerMaxRestarts: int(env.PIXELAI_RUNNER_MAX_RESTARTS, 5),
    jobAttempts: int(env.PIXELAI_JOB_ATTEMPTS, 2),
    lockDurationMs: int(env.PIXELAI_LOCK_DURATION_MS, 30_000),
    stalledIntervalMs: int(env.PIXELAI_STALLED_INTERVAL_MS, 30_000),
    maxStalledCount: int(env.PIXELAI_MAX_STALLED_COUNT, 5),
    jobTimeoutMs: int(env.PIXELAI_JOB_TIMEOUT_MS, 600_000),
    cancelGraceMs: int(env.PIXELAI_CANCEL_GRACE_MS, 10_000),
    memoryBudgetMb: int(env.PIXELAI_MEMORY_BUDGET_MB, 0),
    idleUnloadS: int(env.PIXELAI_IDLE_UNLOAD_S, 0),
    shutdownGraceMs: int(env.PIXELAI_SHUTDOWN_GRACE_MS, 30_000),
    workerWatchdogMs: int(env.PIXELAI_WORKER_WATCHDOG_MS, 15_000),
    rateLimitPerMin: int(env.PIXELAI_RATE_LIMIT_PER_MIN, 600),
    ws: {
      maxConnectionsPerClient: int(env.PIXELAI_WS_MAX_CONNECTIONS_PER_CLIENT, 8),
      maxWatchesPerConnection: int(env.PIXELAI_WS_MAX_WATCHES, 64),
      maxBufferedBytes: int(env.PIXELAI_WS_MAX_BUFFERED_MB, 32) * 1024 * 1024,
      rateLimitPerMin: int(env.PIXELAI_WS_RATE_LIMIT_PER_MIN, 120),
      frameCacheBytes: int(env.PIXELAI_WS_FRAME_CACHE_MB, 64) * 1024 * 1024,
    },
    maxQueuedPerClient: int(env.PIXELAI_MAX_QUEUED_PER_CLIENT, 100),
    maxPixelSteps: int(env.PIXELAI_MAX_PIXEL_STEPS, 1024 * 1024 * 100),
    autoInstallModels: env.PIXELAI_AUTO_INSTALL_MODELS !== "0",
    logLevel: env.LOG_LEVEL ?? "info",
    redisServerBin: env.REDIS_SERVER_BIN || undefined,
    queuePrefix: env.PIXELAI_QUEUE_PREFIX ?? "pixelai",
    sseHeartbeatMs: int(env.PIXELAI_SSE_HEARTBEAT_MS, 15_000),
    retentionMaxAgeHours: int(env.PIXELAI_RETENTION_MAX_AGE_HOURS, 0),
    retentionMaxImages: int(env.PIXELAI_RETENTION_MAX_IMAGES, 0),
    runner: {
      device: oneOf("PIXELAI_DEVICE", env.PIXELAI_DEVICE, DEVICES, "auto"),
      pipelineCache: Math.max(1, int(env.PIXELAI_PIPELINE_CACHE, 2)),
      mlxDtype: oneOf("PIXELAI_MLX_DTYPE", env.PIXELAI_MLX_DTYPE, MLX_DTYPES, "auto"),
      mlxBlas: env.PIXELAI_MLX_BLAS || "auto",
      birefnetDir: path.join(modelsRoot, "birefnet"),
      autoInstall: env.ALLOW_AUTO_INSTALL === "1",
      // what a runner may load from, checked again right before each load (python/pixelai_runner/model_files.py)
      modelRoots: [modelsRoot, lorasRoot].join(path.delimiter),
    },
  };
}
