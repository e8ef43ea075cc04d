import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import { DelayedError, Job, UnrecoverableError, Worker } from "bullmq";
import type IORedis from "ioredis";
import { AppError, ErrorCode, isErrorCode } from "../backends/error-codes";
import type { RunnerSupervisor } from "../backends/runner-supervisor";
import type { Logger } from "../infra/logger";
import { GENERATE_QUEUE, GeneratePayload, JobQueue } from "../jobs/job-queue";
import type { EngineName } from "../jobs/jobs.dto";
import type { JobsRepository } from "../jobs/jobs.repository";
import type { ModelsService } from "../models/models.service";
import { withDeadline } from "./job-deadline";
import { ProgressRelay } from "./step-preview";
import { reconcileJobs, reconcileRow, ReconcileDeps } from "./job-reconciler";
import { WorkerWatchdog } from "./worker-watchdog";
import { outputDirPrefix, sweepStaleOutputDirs } from "./output-dirs";

/** Codes worth another attempt: the runner died under the job, not the job's own fault. */
const RETRIABLE: ReadonlySet<ErrorCode> = new Set(["ENGINE_INTERNAL"]);
const PROGRESS_PERSIST_MS = 1_000;
/** Recorded on each job this process runs (GET /jobs/{id} `worker`): tells many workers on many machines apart. */
const WORKER_NAME = `${os.hostname()}:${process.pid}`;

export interface GenerationWorkerDeps {
  connection: IORedis;
  prefix: string;
  concurrency: number;
  runners: Map<EngineName, RunnerSupervisor>;
  jobs: JobsRepository;
  models: ModelsService;
  logger: Logger;
  lockDurationMs?: number;
  stalledIntervalMs?: number;
  /** Stalls a job survives (a worker killed under it); BullMQ's default of 1 fails a job on the second kill. */
  maxStalledCount?: number;
  /** Per-attempt budget (0: none) and the cancel → kill grace (job-deadline.ts). */
  jobTimeoutMs?: number;
  cancelGraceMs?: number;
  /** close(): how long active jobs may finish before they are handed back to the queue. */
  shutdownGraceMs?: number;
  /** Bound for the stuck-worker watchdog (worker-watchdog.ts); 0 turns it off. */
  watchdogMs?: number;
  /** The producer-side queue: lets the worker reconcile database rows with BullMQ (job-reconciler.ts). */
  queue?: JobQueue;
  reconcileEveryMs?: number;
}

interface Running {
  runner: RunnerSupervisor;
  requestId: string;
  /** Set at shutdown: the attempt's end is a hand-back to the queue, whatever the runner answers. */
  handBack?: boolean;
}

/** Takes "generate" jobs off the queue and runs each on the warm runner of its engine. */
export class GenerationWorker {
  private worker: Worker<GeneratePayload> | undefined;
  private subscriber: IORedis | undefined;
  /** The Worker's own connection: BullMQ never closes a connection it was handed, so close() must. */
  private workerConnection: IORedis | undefined;
  private readonly running = new Map<string, Running>();
  private watchdog: WorkerWatchdog | undefined;
  private reconcileTimer: NodeJS.Timeout | undefined;
  private reconciling: Promise<unknown> | undefined;
  private closing = false;
  /** Jobs handed to process() so far: the watchdog's sign that this worker is taking work. */
  private jobsTaken = 0;

  constructor(private readonly deps: GenerationWorkerDeps) {}

  /** How many times the watchdog replaced a stuck BullMQ worker (tests and logs). */
  get recreations(): number {
    return this.watchdog?.recreations ?? 0;
  }

  async start(): Promise<void> {
    const { connection, prefix, concurrency, logger } = this.deps;
    this.subscriber = connection.duplicate();
    await this.subscriber.subscribe(JobQueue.cancelChannel(prefix));
    this.subscriber.on("message", (_channel, jobId: string) => void this.cancelRunning(jobId));
    await this.createWorker();
    await this.reconcile(); // rows left active by a worker that died before this one started
    // and the output dirs such a worker left behind: untouched for twice the job budget (at least an hour)
    const stale = await sweepStaleOutputDirs(Math.max(3_600_000, 2 * (this.deps.jobTimeoutMs ?? 0)));
    if (stale.length) logger.info({ removed: stale.length }, "removed output dirs left by killed workers");
    const every = this.deps.reconcileEveryMs ?? 60_000;
    if (this.deps.queue && every > 0) {
      this.reconcileTimer = setInterval(() => void this.reconcile(), every);
      this.reconcileTimer.unref();
    }
    const bound = this.deps.watchdogMs ?? 15_000;
    this.watchdog = new WorkerWatchdog(
      {
        connected: () => this.workerConnection?.status === "ready",
        running: () => this.worker?.isRunning() ?? false,
        activeJobs: () => this.running.size,
        jobsTaken: () => this.jobsTaken,
        readyJobs: async () => {
          const key = `${prefix}:${GENERATE_QUEUE}`;
          const [wait, prioritized] = await Promise.all([connection.llen(`${key}:wait`), connection.zcard(`${key}:prioritized`)]);
          return wait + prioritized;
        },
        recreate: (reason) => this.recreateWorker(reason),
      },
      bound,
      (err) => logger.warn({ err: err.message }, "worker watchdog check failed"),
    );
    this.watchdog.start();
    logger.info({ concurrency, engines: [...this.deps.runners.keys()] }, "generation worker started");
  }

  private async createWorker(): Promise<void> {
    const { connection, prefix, concurrency, logger } = this.deps;
    this.workerConnection = connection.duplicate({ maxRetriesPerRequest: null });
    const worker = new Worker<GeneratePayload>(GENERATE_QUEUE, (job, token) => this.process(job, token), {
      connection: this.workerConnection,
      prefix,
      concurrency,
      lockDuration: this.deps.lockDurationMs ?? 30_000,
      stalledInterval: this.deps.stalledIntervalMs ?? 30_000,
      maxStalledCount: this.deps.maxStalledCount ?? 5,
    });
    this.worker = worker;
    // A stall (its worker died) runs none of our code: BullMQ either queued the job again or, past maxStalledCount,
    // failed it. Either way the row still says active; make it agree.
    worker.on("stalled", (jobId) => void this.reconcileOne(String(jobId)));
    worker.on("error", (err) => logger.error({ err: err.message }, "generation worker error"));
    await worker.waitUntilReady();
  }

  /** The watchdog's remedy: drop the BullMQ worker and its connection (without waiting on a dead socket), start anew. */
  private async recreateWorker(reason: string): Promise<void> {
    if (this.closing) return;
    const old = this.worker;
    const oldConnection = this.workerConnection;
    this.deps.logger.warn({ reason }, "generation worker looks stuck; recreating it");
    await Promise.race([old?.close(true).catch(() => undefined), new Promise((r) => setTimeout(r, 5_000).unref())]);
    oldConnection?.disconnect();
    if (this.closing) return;
    await this.createWorker();
  }

  private reconcileDeps(): ReconcileDeps | undefined {
    const { queue, jobs, logger } = this.deps;
    if (!queue) return undefined;
    return {
      rows: (status, limit, olderThan) => jobs.unfinished(status, limit, olderThan),
      requeueIfUnchanged: (id, seen, code, message) => jobs.requeueIfUnchanged(id, seen, code, message),
      finish: (id, status, code, message) => jobs.finish(id, status, code, message),
      state: (id) => queue.state(id),
      add: (payload) => queue.add(payload),
      logger,
    };
  }

  private async reconcile(): Promise<void> {
    const deps = this.reconcileDeps();
    if (!deps || this.reconciling) return;
    this.reconciling = reconcileJobs(deps)
      .catch((err) => this.deps.logger.warn({ err: (err as Error).message }, "job reconciliation failed"))
      .finally(() => (this.reconciling = undefined));
    await this.reconciling;
  }

  private async reconcileOne(jobId: string): Promise<void> {
    const deps = this.reconcileDeps();
    const row = deps && (await this.deps.jobs.find(jobId).catch(() => null));
    if (!deps || !row || (row.status !== "active" && row.status !== "queued")) return;
    await reconcileRow(row, deps).catch((err) =>
      this.deps.logger.warn({ job: jobId, err: (err as Error).message }, "could not reconcile stalled job"),
    );
  }

  private async cancelRunning(jobId: string): Promise<void> {
    const running = this.running.get(jobId);
    if (!running) return;
    try {
      await running.runner.cancel(running.requestId);
    } catch (err) {
      this.deps.logger.warn({ job: jobId, err: (err as Error).message }, "cancel request to runner failed");
    }
  }

  private async cancelRequested(jobId: string): Promise<boolean> {
    return (await this.deps.connection.exists(JobQueue.cancelKey(this.deps.prefix, jobId))) === 1;
  }

  async process(job: Job<GeneratePayload>, token?: string): Promise<{ status: string }> {
    const { jobId, job: request, submittedAt } = job.data;
    const { jobs, logger } = this.deps;
    const attempt = job.attemptsMade + 1;
    this.jobsTaken++;
    if (await this.cancelRequested(jobId)) {
      await jobs.finish(jobId, "cancelled", "CANCELLED", "cancelled before it started");
      return { status: "cancelled" };
    }
    if (!(await jobs.markActive(jobId, attempt, Date.now() - submittedAt, WORKER_NAME))) {
      return { status: "skipped" }; // already final (cancelled while queued): nothing to run
    }
    const outputDir = await fs.mkdtemp(outputDirPrefix(jobId));
    const requestId = `gen-${jobId}-${attempt}`;
    try {
      const runner = this.deps.runners.get(request.engine);
      if (!runner) throw new AppError("ENGINE_UNAVAILABLE", `this worker runs no ${request.engine} runner`);
      const model = await this.deps.models.resolve(request.model, request.engine);
      const lora = request.lora ? await this.deps.models.resolveLora(request.lora, request.model) : null;
      const device = (runner.readyInfo?.device as string | undefined) ?? null;
      if (device) await jobs.setDevice(jobId, device);
      this.running.set(jobId, { runner, requestId });
      if (await this.cancelRequested(jobId)) throw new AppError("CANCELLED", "cancelled before it started");

      let lastPersist = 0;
      // Step order kept even when a step's preview file must be read first (step-preview.ts).
      const relay = new ProgressRelay(outputDir, (live) => job.updateProgress({ ...live }));
      const generation = runner.request(
        "generate",
        {
          params: {
            jobId,
            modelSource: model.source,
            modelName: model.name,
            prompt: request.prompt,
            negativePrompt: request.negativePrompt,
            width: request.width,
            height: request.height,
            steps: request.steps,
            guidanceScale: request.guidanceScale,
            seed: request.seed,
            scheduler: request.scheduler,
            initNoise: request.initNoise,
            previewEvery: request.previewEvery ?? null,
            pixel: request.pixel,
            removeBackground: request.removeBackground,
            lora: lora ? { source: lora.source, strength: lora.strength } : null,
            outputDir,
          },
        },
        {
          id: requestId,
          onProgress: (p) => {
            relay.push(p);
            const now = Date.now();
            if (now - lastPersist >= PROGRESS_PERSIST_MS || p.step === p.totalSteps) {
              lastPersist = now;
              void jobs.saveProgress(jobId, p.step, p.totalSteps).catch(() => undefined);
            }
          },
        },
      );
      // Past the budget: ask the runner to stop between steps; if it does not within the grace, kill it (the
      // supervisor restarts it) so the next job gets a working runner. The job ends TIMEOUT, never retried.
      const result = await withDeadline(generation, {
        timeoutMs: this.deps.jobTimeoutMs ?? 0,
        graceMs: this.deps.cancelGraceMs ?? 10_000,
        onExpire: () => {
          logger.warn({ job: jobId, timeoutMs: this.deps.jobTimeoutMs }, "job ran past its time budget; cancelling it");
          return runner.cancel(requestId);
        },
        onGraceOver: () => {
          logger.error({ job: jobId }, "runner did not stop after the cancel; killing it");
          runner.kill();
        },
      });
      // Every step's progress (and preview file) is published before the job can be seen completed: watchers close
      // their streams on the final state, and the output dir holding previews is removed right after.
      await relay.drain();
      const png = await fs.readFile(String(result.imagePath));
      const sha256 = createHash("sha256").update(png).digest("hex");
      if (sha256 !== result.sha256) throw new AppError("ENGINE_INTERNAL", "result PNG does not match the sha256 the runner reported");
      const timings = (result.timings ?? {}) as Record<string, number>;
      await jobs.complete(jobId, {
        device: (result.device as string) ?? device,
        png,
        sha256,
        width: Number(result.width),
        height: Number(result.height),
        loadMs: roundOrNull(timings.loadMs),
        generateMs: roundOrNull(timings.generateMs),
        postprocessMs: roundOrNull(timings.postprocessMs),
      });
      logger.info(
        `[GEN][${request.engine}] job=${jobId} ${request.width}x${request.height} steps=${request.steps} load=${roundOrNull(timings.loadMs)}ms gen=${roundOrNull(timings.generateMs)}ms post=${roundOrNull(timings.postprocessMs)}ms`,
      );
      return { status: "completed" };
    } catch (err) {
      const code = codeOf(err);
      const message = (err as Error).message;
      if (this.running.get(jobId)?.handBack && token) {
        // Shutdown: back to the queue without spending an attempt; another worker (or this one restarted) runs it.
        await jobs.requeue(jobId, "ENGINE_UNAVAILABLE", "its worker shut down mid-job; handed back to the queue");
        await job.moveToDelayed(Date.now(), token);
        logger.warn({ job: jobId }, "job handed back to the queue at shutdown");
        throw new DelayedError();
      }
      if (code === "CANCELLED") {
        await jobs.finish(jobId, "cancelled", "CANCELLED", message);
        return { status: "cancelled" };
      }
      const attempts = job.opts.attempts ?? 1;
      if (RETRIABLE.has(code) && attempt < attempts) {
        logger.warn({ job: jobId, code, attempt, attempts }, "job attempt failed; retrying");
        await jobs.requeue(jobId, code, message);
        throw err;
      }
      logger.error(`[GEN][${request.engine}] job=${jobId} failed code=${code} ${message}`);
      await jobs.finish(jobId, "failed", code, message);
      throw new UnrecoverableError(`${code}: ${message}`);
    } finally {
      this.running.delete(jobId);
      await fs.rm(outputDir, { recursive: true, force: true });
    }
  }

  /** The close() hand-back: cancel each active generation, then kill a runner that does not stop within the grace. */
  private handBackAll(): void {
    for (const [jobId, running] of this.running) {
      running.handBack = true;
      this.deps.logger.warn({ job: jobId }, "shutdown grace over; handing the active job back");
      void running.runner.cancel(running.requestId).catch(() => undefined);
      setTimeout(() => {
        if (this.running.get(jobId) === running) running.runner.kill();
      }, this.deps.cancelGraceMs ?? 10_000).unref();
    }
  }

  /**
   * Stops taking jobs and waits for the active ones; those still running after `graceMs` are cancelled on their runner
   * (killed if it does not stop) and handed back to the queue, so a shutdown loses nothing and never waits forever.
   */
  async close(graceMs = this.deps.shutdownGraceMs ?? 30_000): Promise<void> {
    this.closing = true;
    this.watchdog?.stop();
    clearInterval(this.reconcileTimer);
    const handBack = setTimeout(() => this.handBackAll(), graceMs);
    try {
      await this.worker?.close();
    } finally {
      clearTimeout(handBack);
    }
    await this.reconciling;
    await this.workerConnection?.quit().catch(() => undefined);
    await this.subscriber?.quit().catch(() => undefined);
  }
}

function codeOf(err: unknown): ErrorCode {
  if (err instanceof AppError) return err.code;
  // errors rethrown by an earlier attempt carry their code as a "CODE: message" prefix
  const match = /^([A-Z_]+): /.exec((err as Error)?.message ?? "");
  return match && isErrorCode(match[1]) ? match[1] : "ENGINE_INTERNAL";
}

function roundOrNull(v: unknown): number | null {
  return typeof v === "number" && Number.isFinite(v) ? Math.round(v) : null;
}
