import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import type IORedis from "ioredis";
import { ApiRole, startApiRole } from "./api/api-role";
import type { JobEventsHub } from "./api/job-events";
import type { WsGateway } from "./api/ws/ws-gateway";
import { EngineStatusStore } from "./backends/engine-status";
import type { RunnerSupervisor } from "./backends/runner-supervisor";
import type { Config } from "./config";
import { Logger } from "./infra/logger";
import { startManagedRedis, ManagedRedis } from "./infra/managed-redis";
import { applyMigrations } from "./infra/migrate";
import { closeDatabase, Db, openDatabase } from "./infra/prisma";
import { producerConnection } from "./infra/redis";
import { JobEventsChannel } from "./jobs/job-events-channel";
import { JobQueue } from "./jobs/job-queue";
import type { EngineName } from "./jobs/jobs.dto";
import { JobsRepository } from "./jobs/jobs.repository";
import { ModelsRepository } from "./models/models.repository";
import { ModelFiles } from "./models/model-files";
import { ModelsService } from "./models/models.service";
import type { GenerationWorker } from "./workers/generation.worker";
import { startWorkerRole } from "./workers/worker-role";
import { ConversionQueue } from "./conversions/conversion-queue";
import { ConversionsRepository } from "./conversions/conversions.repository";
import { SettingsService } from "./settings/settings.service";
import { createHubModels, createInstallParts, createInstallsService } from "./installs/install-role";

const run = promisify(execFile);

export interface ServiceOptions {
  api: boolean;
  worker: boolean;
  /** Keep Redis data on disk (AOF) when we manage Redis ourselves; tests turn this off. */
  durableRedis?: boolean;
}

export interface RunningService {
  url: string | undefined;
  redisUrl: string;
  db: Db;
  runners: Map<EngineName, RunnerSupervisor>;
  worker: GenerationWorker | undefined;
  queue: JobQueue;
  /** The API's live job updates and WebSocket gateway (undefined without the API role). */
  events: JobEventsHub | undefined;
  ws: WsGateway | undefined;
  close(): Promise<void>;
}

/** Builds the offline tiny demo models when the configured default is one of them and it is missing. */
async function ensureDemoModels(config: Config, logger: Logger): Promise<void> {
  if (!config.defaultModel.startsWith("tiny-")) return;
  if (fs.existsSync(path.join(config.modelsRoot, config.defaultModel, "model_index.json"))) return;
  logger.info({ modelsRoot: config.modelsRoot }, "building the tiny demo models (offline, random weights)");
  await run(config.python, [path.join(config.repoRoot, "scripts", "make_tiny_model.py"), "--out", config.modelsRoot], {
    cwd: config.repoRoot,
    maxBuffer: 16 * 1024 * 1024,
  });
}

/** What a start has brought up so far, in shutdown order; the managed Redis goes last. */
interface Started {
  closers: Array<() => Promise<unknown>>;
  managed?: ManagedRedis;
}

async function stopStarted(started: Started, logger: Logger): Promise<void> {
  for (const close of started.closers) {
    try {
      await close();
    } catch (err) {
      logger.warn({ err: (err as Error).message }, "error while shutting down");
    }
  }
  // Redis goes last: a connection still open when it stops would retry (ECONNREFUSED) until the process exits.
  await started.managed?.stop();
}

/** A start that fails at any stage stops what it had started (workers, runners, managed Redis) before it rethrows. */
export async function startService(config: Config, opts: ServiceOptions, logger: Logger): Promise<RunningService> {
  const started: Started = { closers: [] };
  try {
    return await composeService(config, opts, logger, started);
  } catch (err) {
    logger.error({ err: (err as Error).message }, "start failed; stopping what it had started");
    await stopStarted(started, logger);
    logger.info("stopped what the failed start had started");
    throw err;
  }
}

/** Composes API and/or worker over one Redis and one database. Everything a second process must see lives in those. */
async function composeService(config: Config, opts: ServiceOptions, logger: Logger, started: Started): Promise<RunningService> {
  const closers = started.closers;
  let redisUrl = config.redisUrl;
  if (!redisUrl) {
    started.managed = await startManagedRedis({
      dataDir: config.redisDataDir,
      durable: opts.durableRedis ?? true,
      logger,
      serverBin: config.redisServerBin,
    });
    redisUrl = started.managed.url;
  }

  await applyMigrations(config.repoRoot, config.databaseUrl);
  const db = await openDatabase(config.databaseUrl);
  closers.push(() => closeDatabase(db));

  const redis: IORedis = producerConnection(redisUrl);
  closers.push(() => redis.quit().catch(() => undefined));
  const queue = new JobQueue(redis, config.queuePrefix, config.jobAttempts);
  closers.push(() => queue.close());
  const engineStatus = new EngineStatusStore(redis, config.queuePrefix);
  // One channel for live steps and final states; the repository announces each final write on it.
  const jobEvents = new JobEventsChannel(redis, config.queuePrefix);
  const jobsRepo = new JobsRepository(db, jobEvents);
  const modelFiles = new ModelFiles(config.python, path.join(config.repoRoot, "python"));
  const modelsRepo = new ModelsRepository(db);
  const modelsService = new ModelsService(modelsRepo, config.modelsRoot, config.lorasRoot, modelFiles, logger, engineStatus);
  const installParts = createInstallParts(db, redis, config.queuePrefix);
  closers.push(() => installParts.queue.close());
  const installs = createInstallsService(installParts, engineStatus, logger);
  const hubModels = createHubModels(installParts, installs, modelsService, modelsRepo, config.autoInstallModels, logger);
  const settings = new SettingsService(
    redis,
    config.queuePrefix,
    { engine: config.defaultEngine, model: config.defaultModel },
    engineStatus,
    modelsService,
    hubModels,
  );
  const conversionsRepo = new ConversionsRepository(db);
  const conversionQueue = new ConversionQueue(redis, config.queuePrefix);
  closers.push(() => conversionQueue.close());

  await ensureDemoModels(config, logger);
  await modelsService.scanLocal();

  let runners = new Map<EngineName, RunnerSupervisor>();
  let worker: GenerationWorker | undefined;
  if (opts.worker) {
    const role = await startWorkerRole({
      config,
      logger,
      redisUrl,
      queue,
      engineStatus,
      jobsRepo,
      jobEvents,
      modelsService,
      conversionsRepo,
      installParts,
      hubModels,
    });
    ({ runners, worker } = role);
    closers.unshift(...role.closers);
  }

  let api: ApiRole | undefined;
  if (opts.api) {
    api = await startApiRole({
      config,
      logger,
      redis,
      queue,
      conversionQueue,
      jobEvents,
      engineStatus,
      settings,
      jobsRepo,
      modelsService,
      conversionsRepo,
      installParts,
      installs,
      hubModels,
    });
    // API first to close: stop taking requests before the worker and runners go.
    closers.unshift(...api.closers);
  }

  return {
    url: api?.url,
    redisUrl,
    db,
    runners,
    worker,
    queue,
    events: api?.events,
    ws: api?.ws,
    close: () => stopStarted(started, logger),
  };
}
