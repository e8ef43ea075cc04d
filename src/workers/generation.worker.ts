import os from "node:os";
import { DelayedError, Job, UnrecoverableError, Worker } from "bullmq";
import type IORedis from "ioredis";
import { encodeFailure } from "../backends/error-codes";
import type { Logger } from "../infra/logger";
import type { CancelBus } from "../jobs/cancel-bus";
import type { JobEventsChannel } from "../jobs/job-events-channel";
import { GENERATE_QUEUE, GeneratePayload } from "../jobs/job-queue";
import type { EngineName } from "../jobs/jobs.dto";
import { GenerationRepository, GenerationRunner, HubGate, ModelResolver, runGeneration, StopReason } from "./run-generation";
import { WorkerWatchdog } from "./worker-watchdog";

/** Recorded on each job this process runs (GET /jobs/{id} `worker`): tells many workers on many machines apart. */
const WORKER_NAME = `${os.hostname()}:${process.pid}`;
/** How often a job waiting for an install looks again (a delayed BullMQ job: no worker slot is held meanwhile). */
export const INSTALL_POLL_MS = 1_000;

export interface GenerationWorkerDeps {
  connection: IORedis;
  prefix: string;
  concurrency: number;
  runners: Map<EngineName, GenerationRunner>;
  jobs: GenerationRepository;
  models: ModelResolver;
  /** Jobs naming hub ids wait for their installs (src/installs/hub-models.ts). */
  hub?: HubGate;
  events: Pick<JobEventsChannel, "publishProgress">;
  cancels: CancelBus;
  logger: Logger;
  lockDurationMs: number;
  stalledIntervalMs: number;
  /** Stalls a job survives (a worker killed under it); BullMQ's default of 1 fails a job on the second kill. */
  maxStalledCount: number;
  /** Per-attempt budget (0: none) and the cancel → kill grace (job-deadline.ts). */
  jobTimeoutMs: number;
  cancelGraceMs: number;
  /** close(): how long active jobs may finish before they are handed back to the queue. */
  shutdownGraceMs: number;
  /** Bound for the stuck-worker watchdog (worker-watchdog.ts); 0 turns it off. */
  watchdogMs: number;
  /** A job whose worker died (BullMQ ran none of our code for it): the row must be made to agree (job-reconciler.ts). */
  onStalled?: (jobId: string) => void;
}

/**
 * The BullMQ side of generation jobs: owns the BullMQ Worker (its locks, its re-creation by the watchdog), hears
 * cancels for the jobs it runs, hands active jobs back at shutdown, and maps each attempt's outcome (run-generation.ts,
 * which has already written it to the database) onto what BullMQ should do with the job next.
 */
export class GenerationWorker {
  private worker: Worker<GeneratePayload> | undefined;
  /** The Worker's own connection: BullMQ never closes a connection it was handed, so close() must. */
  private workerConnection: IORedis | undefined;
  private stopListening: (() => Promise<void>) | undefined;
  /** The attempts running here, by job id: how a cancel or the shutdown reaches them. */
  private readonly running = new Map<string, AbortController>();
  private watchdog: WorkerWatchdog | undefined;
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
    this.stopListening = await this.deps.cancels.listen((jobId) => this.stop(jobId, "cancel"));
    await this.createWorker();
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
      this.deps.watchdogMs,
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
      lockDuration: this.deps.lockDurationMs,
      stalledInterval: this.deps.stalledIntervalMs,
      maxStalledCount: this.deps.maxStalledCount,
    });
    this.worker = worker;
    // A stall (its worker died) runs none of our code: BullMQ either queued the job again or, past maxStalledCount,
    // failed it. Either way the row still says active.
    worker.on("stalled", (jobId) => this.deps.onStalled?.(String(jobId)));
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

  private stop(jobId: string, reason: StopReason): void {
    this.running.get(jobId)?.abort(reason);
  }

  async process(job: Job<GeneratePayload>, token?: string): Promise<{ status: string }> {
    const { jobId, job: request } = job.data;
    this.jobsTaken++;
    // Registered before anything is awaited: a cancel published from here on reaches this attempt through the signal,
    // one published before has left its key for cancelRequested.
    const control = new AbortController();
    this.running.set(jobId, control);
    let outcome;
    try {
      outcome = await runGeneration(
        { payload: job.data, attempt: job.attemptsMade + 1, maxAttempts: job.opts.attempts ?? 1 },
        {
          // A pixelize job loads no model: any runner of this worker can do it when its engine's is absent.
          runner: this.deps.runners.get(request.engine) ?? (request.input ? this.deps.runners.values().next().value : undefined),
          repository: this.deps.jobs,
          models: this.deps.models,
          hub: this.deps.hub,
          publishProgress: (id, progress) => this.deps.events.publishProgress(id, progress),
          cancelRequested: (id) => this.deps.cancels.isRequested(id),
          signal: control.signal,
          jobTimeoutMs: this.deps.jobTimeoutMs,
          cancelGraceMs: this.deps.cancelGraceMs,
          workerName: WORKER_NAME,
          logger: this.deps.logger,
        },
      );
    } finally {
      if (this.running.get(jobId) === control) this.running.delete(jobId);
    }
    switch (outcome.status) {
      case "handedBack":
        if (!token) throw new Error("cannot hand a job back without its lock token");
        await job.moveToDelayed(Date.now(), token);
        throw new DelayedError();
      case "waiting":
        // Back to Redis until the next look: a worker that dies now loses nothing, and no attempt is spent.
        if (!token) throw new Error("cannot delay a job without its lock token");
        await job.moveToDelayed(Date.now() + INSTALL_POLL_MS, token);
        throw new DelayedError();
      case "retry":
        // A plain error: BullMQ runs the job again after its backoff (the row is queued already).
        throw new Error(encodeFailure(outcome.failure.code, outcome.failure.message));
      case "failed":
        throw new UnrecoverableError(encodeFailure(outcome.failure.code, outcome.failure.message));
      default:
        return { status: outcome.status };
    }
  }

  /** The close() hand-back: every attempt still running is stopped (its runner killed if it does not listen). */
  private handBackAll(): void {
    for (const jobId of this.running.keys()) {
      this.deps.logger.warn({ job: jobId }, "shutdown grace over; handing the active job back");
      this.stop(jobId, "handBack");
    }
  }

  /**
   * Stops taking jobs and waits for the active ones; those still running after `graceMs` are cancelled on their runner
   * (killed if it does not stop) and handed back to the queue, so a shutdown loses nothing and never waits forever.
   */
  async close(graceMs = this.deps.shutdownGraceMs): Promise<void> {
    this.closing = true;
    this.watchdog?.stop();
    const handBack = setTimeout(() => this.handBackAll(), graceMs);
    try {
      await this.worker?.close();
    } finally {
      clearTimeout(handBack);
    }
    await this.workerConnection?.quit().catch(() => undefined);
    await this.stopListening?.();
  }
}
