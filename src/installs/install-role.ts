import path from "node:path";
import type IORedis from "ioredis";
import type { EngineStatusStore } from "../backends/engine-status";
import type { Config } from "../config";
import type { Db } from "../infra/prisma";
import type { Logger } from "../infra/logger";
import { ModelFiles } from "../models/model-files";
import { InstallQueue } from "./install-queue";
import { InstallWorker } from "./install.worker";
import { InstallsRepository } from "./installs.repository";
import { InstallsService } from "./installs.service";
import { snapshotFacts } from "./snapshot-facts";
import { HubModels } from "./hub-models";
import type { ModelsService } from "../models/models.service";
import type { ModelsRepository } from "../models/models.repository";

/** What both roles share: the Install rows and the `install` queue. */
export interface InstallParts {
  repo: InstallsRepository;
  queue: InstallQueue;
}

export function createInstallParts(db: Db, redis: IORedis, prefix: string): InstallParts {
  return { repo: new InstallsRepository(db), queue: new InstallQueue(redis, prefix) };
}

/** The API side: POST /models with a hub id, GET /installs. `variant: auto` asks the torch engine's published dtype. */
export function createInstallsService(parts: InstallParts, engineStatus: EngineStatusStore, logger: Logger): InstallsService {
  const prefersFp16 = async () => (await engineStatus.read("torch").catch(() => null))?.dtype === "float16";
  return new InstallsService(parts.repo, parts.queue, { prefersFp16 }, logger.child({ component: "installs" }));
}

/** Hub references in jobs and defaults (hub-models.ts): one per process, shared by its API and worker roles. */
export function createHubModels(
  parts: InstallParts,
  installs: InstallsService,
  models: Pick<ModelsService, "installedHub">,
  modelsRepo: Pick<ModelsRepository, "findByName">,
  autoInstall: boolean,
  logger: Logger,
): HubModels {
  return new HubModels({
    models: { installedHub: (ref, kind) => models.installedHub(ref, kind), findByName: (name) => modelsRepo.findByName(name) },
    installs,
    installsRepo: parts.repo,
    queue: parts.queue,
    autoInstall,
    logger: logger.child({ component: "hub-models" }),
  });
}

/** The worker side: one install at a time per worker process; returns its closer. */
export async function startInstallWorker(
  config: Config,
  connection: IORedis,
  parts: InstallParts,
  logger: Logger,
): Promise<() => Promise<void>> {
  const worker = new InstallWorker({
    connection,
    prefix: config.queuePrefix,
    python: config.python,
    repoRoot: config.repoRoot,
    modelsRoot: config.modelsRoot,
    installs: parts.repo,
    inspect: (...args) => snapshotFacts(new ModelFiles(config.python, path.join(config.repoRoot, "python")), ...args),
    logger: logger.child({ component: "install-worker" }),
    lockDurationMs: config.lockDurationMs,
    stalledIntervalMs: config.stalledIntervalMs,
    maxStalledCount: config.maxStalledCount,
  });
  await worker.start();
  return () => worker.close();
}
