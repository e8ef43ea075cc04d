import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Job, UnrecoverableError, Worker } from "bullmq";
import type IORedis from "ioredis";
import { AppError, ErrorCode, isErrorCode } from "../backends/error-codes";
import type { RunnerSupervisor } from "../backends/runner-supervisor";
import type { Logger } from "../infra/logger";
import { GENERATE_QUEUE, GeneratePayload, JobQueue } from "../jobs/job-queue";
import type { EngineName } from "../jobs/jobs.dto";
import type { JobsRepository } from "../jobs/jobs.repository";
import type { ModelsService } from "../models/models.service";

/** Codes worth another attempt: the runner died under the job, not the job's own fault. */
const RETRIABLE: ReadonlySet<ErrorCode> = new Set(["ENGINE_INTERNAL"]);
const PROGRESS_PERSIST_MS = 1_000;

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
}

interface Running {
  runner: RunnerSupervisor;
  requestId: string;
}

/** Takes "generate" jobs off the queue and runs each on the warm runner of its engine. */
export class GenerationWorker {
  private worker: Worker<GeneratePayload> | undefined;
  private subscriber: IORedis | undefined;
  /** The Worker's own connection: BullMQ never closes a connection it was handed, so close() must. */
  private workerConnection: IORedis | undefined;
  private readonly running = new Map<string, Running>();

  constructor(private readonly deps: GenerationWorkerDeps) {}

  async start(): Promise<void> {
    const { connection, prefix, concurrency, logger } = this.deps;
    this.subscriber = connection.duplicate();
    await this.subscriber.subscribe(JobQueue.cancelChannel(prefix));
    this.subscriber.on("message", (_channel, jobId: string) => void this.cancelRunning(jobId));
    this.workerConnection = connection.duplicate({ maxRetriesPerRequest: null });
    this.worker = new Worker<GeneratePayload>(GENERATE_QUEUE, (job) => this.process(job), {
      connection: this.workerConnection,
      prefix,
      concurrency,
      lockDuration: this.deps.lockDurationMs ?? 30_000,
      stalledInterval: this.deps.stalledIntervalMs ?? 30_000,
    });
    this.worker.on("failed", (job, err) => {
      // BullMQ fails a job without running our code when it stalled too often; make the record say so.
      if (job && job.attemptsMade >= (job.opts.attempts ?? 1)) {
        void this.deps.jobs.finish(job.data.jobId, "failed", codeOf(err), err.message).catch(() => undefined);
      }
    });
    this.worker.on("error", (err) => logger.error({ err: err.message }, "generation worker error"));
    await this.worker.waitUntilReady();
    logger.info({ concurrency, engines: [...this.deps.runners.keys()] }, "generation worker started");
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

  async process(job: Job<GeneratePayload>): Promise<{ status: string }> {
    const { jobId, job: request, submittedAt } = job.data;
    const { jobs, logger } = this.deps;
    const attempt = job.attemptsMade + 1;
    if (await this.cancelRequested(jobId)) {
      await jobs.finish(jobId, "cancelled", "CANCELLED", "cancelled before it started");
      return { status: "cancelled" };
    }
    if (!(await jobs.markActive(jobId, attempt, Date.now() - submittedAt))) {
      return { status: "skipped" }; // already final (cancelled while queued): nothing to run
    }
    const outputDir = await fs.mkdtemp(path.join(os.tmpdir(), `pixelai-${jobId}-`));
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
      const result = await runner.request(
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
            pixel: request.pixel,
            removeBackground: request.removeBackground,
            lora: lora ? { source: lora.source, strength: lora.strength } : null,
            outputDir,
          },
        },
        {
          id: requestId,
          onProgress: (p) => {
            void job.updateProgress({ step: p.step, totalSteps: p.totalSteps }).catch(() => undefined);
            const now = Date.now();
            if (now - lastPersist >= PROGRESS_PERSIST_MS || p.step === p.totalSteps) {
              lastPersist = now;
              void jobs.saveProgress(jobId, p.step, p.totalSteps).catch(() => undefined);
            }
          },
        },
      );
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

  async close(): Promise<void> {
    await this.worker?.close();
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
