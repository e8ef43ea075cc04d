import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import type IORedis from "ioredis";
import { EngineStatusStore, RecentProbes } from "../backends/engine-status";
import type { Config } from "../config";
import type { ConversionQueue } from "../conversions/conversion-queue";
import type { ConversionsRepository } from "../conversions/conversions.repository";
import { ConversionsService } from "../conversions/conversions.service";
import type { Logger } from "../infra/logger";
import { CancelBus } from "../jobs/cancel-bus";
import type { JobEventsChannel } from "../jobs/job-events-channel";
import type { JobQueue } from "../jobs/job-queue";
import type { EngineName } from "../jobs/jobs.dto";
import type { JobsRepository } from "../jobs/jobs.repository";
import { JobsService } from "../jobs/jobs.service";
import type { ModelsService } from "../models/models.service";
import type { InstallParts } from "../installs/install-role";
import type { InstallsService } from "../installs/installs.service";
import type { HubModels } from "../installs/hub-models";
import type { SettingsService } from "../settings/settings.service";
import { SERVER_OPTIONS, answerClientErrorsAsJson } from "./client-errors";
import { createApp } from "./app";
import { JobEventsHub } from "./job-events";
import { SubmitRateLimiter } from "./rate-limit";
import { WsGateway } from "./ws/ws-gateway";

export interface ApiRoleDeps {
  config: Config;
  logger: Logger;
  /** The producer connection: fails fast, so a request never hangs while Redis is away. */
  redis: IORedis;
  queue: JobQueue;
  conversionQueue: ConversionQueue;
  jobEvents: JobEventsChannel;
  engineStatus: EngineStatusStore;
  settings: SettingsService;
  jobsRepo: JobsRepository;
  modelsService: ModelsService;
  conversionsRepo: ConversionsRepository;
  /** Hub installs (src/installs): POST /models with a hub id, GET /installs. */
  installParts: InstallParts;
  installs: InstallsService;
  /** Hub ids in jobs: start or join installs, show their progress on queued jobs. */
  hubModels: HubModels;
}

export interface ApiRole {
  url: string;
  events: JobEventsHub;
  ws: WsGateway;
  /** Shutdown steps in the order to run them: WebSocket clients, then the HTTP server, then live events. */
  closers: Array<() => Promise<unknown>>;
}

export function packageVersion(repoRoot: string): string {
  return JSON.parse(fs.readFileSync(path.join(repoRoot, "package.json"), "utf8")).version as string;
}

/** The API role: the job and conversion services, live job events, the HTTP app and the WebSocket gateway, listening. */
export async function startApiRole(deps: ApiRoleDeps): Promise<ApiRole> {
  const closers: Array<() => Promise<unknown>> = [];
  try {
    return await composeApi(deps, closers);
  } catch (err) {
    // A port taken, say: stop what was started (the live events subscription) before the error goes up.
    for (const close of closers) await close().catch(() => undefined);
    throw err;
  }
}

async function composeApi(deps: ApiRoleDeps, closers: Array<() => Promise<unknown>>): Promise<ApiRole> {
  const { config, logger, redis, queue, conversionQueue, jobEvents, engineStatus, settings, jobsRepo, modelsService, conversionsRepo } =
    deps;
  const probes = new RecentProbes(engineStatus);
  const engineDirectory = {
    defaultEngine: () => settings.defaultEngine(),
    defaultModel: () => settings.defaultModel(),
    read: (e: EngineName) => probes.read(e),
  };
  const jobs = new JobsService(
    jobsRepo,
    queue,
    new CancelBus(redis, config.queuePrefix),
    jobEvents,
    modelsService,
    engineDirectory,
    logger.child({ component: "jobs" }),
    deps.hubModels,
    { maxQueuedPerClient: config.maxQueuedPerClient, maxPixelSteps: config.maxPixelSteps },
  );
  const events = new JobEventsHub(jobEvents, jobs, logger.child({ component: "job-events" }));
  await events.start();
  closers.unshift(() => events.close());
  const rateLimiter = new SubmitRateLimiter(redis, config.queuePrefix, config.rateLimitPerMin, logger.child({ component: "rate-limit" }));
  const wsReadLimiter = new SubmitRateLimiter(
    redis,
    config.queuePrefix,
    config.ws.rateLimitPerMin,
    logger.child({ component: "rate-limit" }),
    {
      name: "ws-read",
      what: "subscribe and engines frames",
    },
  );
  const conversions = new ConversionsService(conversionsRepo, conversionQueue, modelsService, logger.child({ component: "conversions" }));
  const app = createApp(
    {
      config,
      jobs,
      models: modelsService,
      conversions,
      installs: deps.installs,
      engines: engineStatus,
      settings,
      version: packageVersion(config.repoRoot),
      events,
      rateLimiter,
      adminQueues: [queue.queue, conversionQueue.queue, deps.installParts.queue.queue],
    },
    logger,
  );
  const server = http.createServer(SERVER_OPTIONS, app);
  answerClientErrorsAsJson(server, logger.child({ component: "http" }));
  const ws = new WsGateway({
    server,
    jobs,
    events,
    engines: engineStatus,
    settings,
    models: modelsService,
    originPolicy: config,
    apiKey: config.apiKey,
    rateLimiter,
    readLimiter: wsReadLimiter,
    limits: config.ws,
    logger: logger.child({ component: "ws" }),
  });
  ws.start();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, () => resolve());
  });
  const addr = server.address() as { port: number };
  const url = `http://${config.host.includes(":") ? `[${config.host}]` : config.host}:${addr.port}`;
  logger.info({ url }, "API listening");
  // Stop taking requests before anything else of the API goes.
  closers.unshift(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  // WebSocket clients first: upgraded sockets are not the HTTP server's connections any more.
  closers.unshift(() => ws.close());
  return { url, events, ws, closers };
}
