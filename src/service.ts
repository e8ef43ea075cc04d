import { execFile } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { promisify } from "node:util";
import type IORedis from "ioredis";
import { createApp } from "./api/app";
import { JobEventsHub } from "./api/job-events";
import { WsGateway } from "./api/ws/ws-gateway";
import { EngineStatusStore } from "./backends/engine-status";
import type { RunnerSupervisor } from "./backends/runner-supervisor";
import type { Config } from "./config";
import { Logger } from "./infra/logger";
import { startManagedRedis, ManagedRedis } from "./infra/managed-redis";
import { applyMigrations } from "./infra/migrate";
import { Db, openDatabase } from "./infra/prisma";
import { producerConnection } from "./infra/redis";
import { JobQueue } from "./jobs/job-queue";
import type { EngineName } from "./jobs/jobs.dto";
import { JobsRepository } from "./jobs/jobs.repository";
import { JobsService } from "./jobs/jobs.service";
import { ModelsRepository } from "./models/models.repository";
import { ModelsService } from "./models/models.service";
import type { GenerationWorker } from "./workers/generation.worker";
import { startWorkerRole } from "./workers/worker-role";
import { ConversionQueue } from "./conversions/conversion-queue";
import { ConversionsRepository } from "./conversions/conversions.repository";
import { ConversionsService } from "./conversions/conversions.service";
import { SubmitRateLimiter } from "./api/rate-limit";

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

export function packageVersion(repoRoot: string): string {
  return JSON.parse(fs.readFileSync(path.join(repoRoot, "package.json"), "utf8")).version as string;
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

/** Composes API and/or worker over one Redis and one database. Everything a second process must see lives in those. */
export async function startService(config: Config, opts: ServiceOptions, logger: Logger): Promise<RunningService> {
  const closers: Array<() => Promise<unknown>> = [];
  let managed: ManagedRedis | undefined;
  let redisUrl = config.redisUrl;
  if (!redisUrl) {
    managed = await startManagedRedis({
      dataDir: config.redisDataDir,
      durable: opts.durableRedis ?? true,
      logger,
      serverBin: config.redisServerBin,
    });
    redisUrl = managed.url;
  }

  await applyMigrations(config.repoRoot, config.databaseUrl);
  const db = await openDatabase(config.databaseUrl);
  closers.push(() => db.$disconnect());

  const redis: IORedis = producerConnection(redisUrl);
  closers.push(() => redis.quit().catch(() => undefined));
  const queue = new JobQueue(redis, config.queuePrefix, config.jobAttempts);
  closers.push(() => queue.close());
  const engineStatus = new EngineStatusStore(redis, config.queuePrefix, config.defaultEngine, config.defaultModel);
  const jobsRepo = new JobsRepository(db);
  const modelsService = new ModelsService(new ModelsRepository(db), config.modelsRoot, config.lorasRoot, logger);
  const conversionsRepo = new ConversionsRepository(db);
  const conversionQueue = new ConversionQueue(redis, config.queuePrefix);
  closers.push(() => conversionQueue.close());

  await ensureDemoModels(config, logger);
  await modelsService.scanLocal();

  let runners = new Map<EngineName, RunnerSupervisor>();
  let worker: GenerationWorker | undefined;
  if (opts.worker) {
    const role = await startWorkerRole({ config, logger, redisUrl, queue, engineStatus, jobsRepo, modelsService, conversionsRepo });
    ({ runners, worker } = role);
    closers.unshift(...role.closers);
  }

  let url: string | undefined;
  let events: JobEventsHub | undefined;
  let ws: WsGateway | undefined;
  if (opts.api) {
    const jobs = new JobsService(jobsRepo, queue, modelsService, engineStatus, logger.child({ component: "jobs" }));
    events = new JobEventsHub(queue, jobs, logger.child({ component: "job-events" }));
    await events.start();
    closers.unshift(() => events!.close());
    const rateLimiter = new SubmitRateLimiter(redis, config.queuePrefix, config.rateLimitPerMin, logger.child({ component: "rate-limit" }));
    const conversions = new ConversionsService(conversionsRepo, conversionQueue, modelsService, logger.child({ component: "conversions" }));
    const app = createApp(
      {
        config,
        jobs,
        models: modelsService,
        conversions,
        engines: engineStatus,
        version: packageVersion(config.repoRoot),
        events,
        rateLimiter,
        adminQueues: [queue.queue, conversionQueue.queue],
      },
      logger,
    );
    const server = http.createServer(app);
    ws = new WsGateway({
      server,
      jobs,
      events,
      engines: engineStatus,
      models: modelsService,
      allowedHosts: config.allowedHosts,
      rateLimiter,
      logger: logger.child({ component: "ws" }),
    });
    ws.start();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(config.port, config.host, () => resolve());
    });
    const addr = server.address() as { port: number };
    url = `http://${config.host.includes(":") ? `[${config.host}]` : config.host}:${addr.port}`;
    logger.info({ url }, "API listening");
    // API first to close: stop taking requests before the worker and runners go.
    closers.unshift(
      () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    );
    // WebSocket clients first: upgraded sockets are not the HTTP server's connections any more.
    closers.unshift(() => ws!.close());
  }

  return {
    url,
    redisUrl,
    db,
    runners,
    worker,
    queue,
    events,
    ws,
    close: async () => {
      for (const close of closers) {
        try {
          await close();
        } catch (err) {
          logger.warn({ err: (err as Error).message }, "error while shutting down");
        }
      }
      // Redis goes last: a connection still open when it stops would retry (ECONNREFUSED) until the process exits.
      await managed?.stop();
    },
  };
}
