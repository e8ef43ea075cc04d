import { EngineStatusStore } from "../backends/engine-status";
import { RunnerSupervisor } from "../backends/runner-supervisor";
import type { Config } from "../config";
import type { Logger } from "../infra/logger";
import { workerConnection } from "../infra/redis";
import type { ConversionsRepository } from "../conversions/conversions.repository";
import { CancelBus } from "../jobs/cancel-bus";
import type { JobEventsChannel } from "../jobs/job-events-channel";
import type { JobQueue } from "../jobs/job-queue";
import type { EngineName } from "../jobs/jobs.dto";
import type { JobsRepository } from "../jobs/jobs.repository";
import { RetentionSweeper } from "../jobs/retention";
import type { ModelsService } from "../models/models.service";
import { InstallParts, startInstallWorker } from "../installs/install-role";
import type { HubModels } from "../installs/hub-models";
import { ConversionWorker } from "./conversion.worker";
import { GenerationWorker } from "./generation.worker";
import { JobReconciler } from "./job-reconciler";
import { sweepStaleOutputDirs } from "./output-dirs";
import type { GenerationRunner } from "./run-generation";
import { ModelMemory } from "./model-memory";
import { residentBytes, runtimeBytesOf } from "../models/resident-size";

export interface WorkerRoleDeps {
  config: Config;
  logger: Logger;
  redisUrl: string;
  queue: JobQueue;
  engineStatus: EngineStatusStore;
  jobsRepo: JobsRepository;
  /** Live steps to every API process (the repository announces final states on it too). */
  jobEvents: JobEventsChannel;
  modelsService: ModelsService;
  conversionsRepo: ConversionsRepository;
  /** Hub installs (src/installs): this worker runs the `install` queue too. */
  installParts: InstallParts;
  /** Jobs naming hub ids wait (queued) for their installs. */
  hubModels: HubModels;
}

export interface WorkerRole {
  runners: Map<EngineName, RunnerSupervisor>;
  worker: GenerationWorker;
  /** Shutdown steps in the order to run them: stop taking work, then runners, then the worker's Redis connection. */
  closers: Array<() => Promise<unknown>>;
}

/** The worker role: one warm runner per engine, the generation and conversion workers, and image retention. */
export async function startWorkerRole(deps: WorkerRoleDeps): Promise<WorkerRole> {
  const { config, logger, redisUrl, queue, engineStatus, jobsRepo, jobEvents, modelsService, conversionsRepo } = deps;
  const closers: Array<() => Promise<unknown>> = [];
  const runners = new Map<EngineName, RunnerSupervisor>();
  for (const engine of config.engines) {
    runners.set(
      engine,
      new RunnerSupervisor({
        settings: { ...config.runner, engine },
        python: config.python,
        cwd: config.repoRoot,
        silenceTimeoutMs: config.runnerTimeoutMs,
        startTimeoutMs: config.runnerStartTimeoutMs,
        maxRestarts: config.runnerMaxRestarts,
        logger: logger.child({ component: `runner-${engine}` }),
      }),
    );
  }
  const workerRedis = workerConnection(redisUrl);
  closers.unshift(() => workerRedis.quit().catch(() => undefined));
  for (const [engine, runner] of runners) {
    // A runner that cannot start must not take the worker down: it stays "failed", its engine is published as
    // unavailable (submits get 503) and a job that reaches it fails at once with ENGINE_UNAVAILABLE.
    await runner.start().catch((err) => logger.error({ engine, err: (err as Error).message }, `${engine} runner failed to start`));
    const publish = () => publishProbe(engine, runner, engineStatus);
    await publish();
    logger.info(
      { engine, device: runner.readyInfo?.device, chip: runner.readyInfo?.chip },
      `${engine} runner on ${runner.readyInfo?.device} (${runner.readyInfo?.chip})`,
    );
    runner.on("restarted", () => void publish());
    runner.on("failed", () => void publish());
    // Probes expire in Redis (engine-status.ts) so a dead worker's engine stops looking available; keep ours fresh.
    const timer = setInterval(() => void publish(), 20_000);
    timer.unref();
    closers.unshift(async () => clearInterval(timer));
    closers.unshift(() => runner.stop());
  }
  const reconciler = new JobReconciler({
    rows: (status, limit, olderThan) => jobsRepo.unfinished(status, limit, olderThan),
    find: (id) => jobsRepo.find(id),
    requeueIfUnchanged: (id, seen, code, message) => jobsRepo.requeueIfUnchanged(id, seen, code, message),
    finish: (id, status, code, message) => jobsRepo.finish(id, status, code, message),
    state: (id) => queue.state(id),
    add: (payload) => queue.add(payload),
    logger: logger.child({ component: "reconciler" }),
  });
  const memory = new ModelMemory({
    budgetBytes: config.memoryBudgetMb * 1024 * 1024,
    idleMs: config.idleUnloadS * 1000,
    cacheSize: config.runner.pipelineCache ?? 2,
    sizeOf: (engine, source) => residentBytes(source, runtimeBytesOf(runners.get(engine)?.readyInfo?.dtype)),
    runners,
    logger: logger.child({ component: "model-memory" }),
  });
  memory.start();
  closers.unshift(async () => memory.stop());
  const generationRunners = new Map<EngineName, GenerationRunner>(
    [...runners].map(([engine, runner]) => [engine, generationRunner(engine, runner, memory)]),
  );
  const worker = new GenerationWorker({
    connection: workerRedis,
    prefix: config.queuePrefix,
    concurrency: config.workerConcurrency,
    runners: generationRunners,
    jobs: jobsRepo,
    models: modelsService,
    hub: deps.hubModels,
    events: jobEvents,
    cancels: new CancelBus(workerRedis, config.queuePrefix),
    logger: logger.child({ component: "generation-worker" }),
    lockDurationMs: config.lockDurationMs,
    stalledIntervalMs: config.stalledIntervalMs,
    maxStalledCount: config.maxStalledCount,
    jobTimeoutMs: config.jobTimeoutMs,
    cancelGraceMs: config.cancelGraceMs,
    shutdownGraceMs: config.shutdownGraceMs,
    watchdogMs: config.workerWatchdogMs,
    onStalled: (jobId) => void reconciler.runOne(jobId),
  });
  await worker.start();
  closers.unshift(() => worker.close());
  await reconciler.runAll(); // rows left active by a worker that died before this one started
  reconciler.start(60_000);
  closers.unshift(() => reconciler.stop());
  // and the output dirs such a worker left behind: untouched for twice the job budget (at least an hour)
  const stale = await sweepStaleOutputDirs(Math.max(3_600_000, 2 * config.jobTimeoutMs));
  if (stale.length) logger.info({ removed: stale.length }, "removed output dirs left by killed workers");
  const conversionWorker = new ConversionWorker({
    connection: workerRedis,
    prefix: config.queuePrefix,
    python: config.python,
    repoRoot: config.repoRoot,
    conversions: conversionsRepo,
    models: modelsService,
    logger: logger.child({ component: "conversion-worker" }),
  });
  await conversionWorker.start();
  closers.unshift(() => conversionWorker.close());
  closers.unshift(await startInstallWorker(config, workerRedis, deps.installParts, logger));
  // Image retention lives with the workers (they write results); idempotent, so several workers may all sweep.
  const retention = new RetentionSweeper(
    jobsRepo,
    { maxAgeHours: config.retentionMaxAgeHours, maxImages: config.retentionMaxImages },
    logger.child({ component: "retention" }),
  );
  retention.start();
  closers.unshift(() => retention.stop());
  return { runners, worker, closers };
}

/** Asks a runner for its probe and publishes it for every API process; a runner that cannot answer is unavailable. */
async function publishProbe(engine: EngineName, runner: RunnerSupervisor, engineStatus: EngineStatusStore): Promise<void> {
  try {
    const probe = await runner.probe();
    await engineStatus.publish({ ...probe, features: { ...probe.features }, engine });
  } catch (err) {
    await engineStatus
      .publish({ engine, available: false, reason: `runner not available: ${(err as Error).message}` })
      .catch(() => undefined);
  }
}

/** A warm runner as a generation sees it; each generation holds its model in the memory ledger while it runs. */
function generationRunner(engine: EngineName, runner: RunnerSupervisor, memory: ModelMemory): GenerationRunner {
  return {
    device: () => runner.readyInfo?.device ?? null,
    generate: async (params, opts) => {
      const release = await memory.acquire(engine, params.modelSource);
      try {
        return await runner.generate(params, opts);
      } finally {
        release();
      }
    },
    pixelize: (params, opts) => runner.pixelize(params, opts),
    cancel: (requestId) => runner.cancel(requestId),
    kill: () => runner.kill(),
  };
}
