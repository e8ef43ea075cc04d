import { Queue, QueueEvents } from "bullmq";
import type IORedis from "ioredis";
import type { ResolvedJob } from "./jobs.dto";

export const GENERATE_QUEUE = "generate";
/** Approximate length the "generate" events stream is trimmed to (see the constructor). */
export const EVENTS_MAX_LEN = 2_000;

/**
 * BullMQ runs jobs without a priority before prioritised ones; the API promises the opposite ("1 = highest, jobs without
 * a priority run after prioritised ones"), so those get one step below the lowest a request may ask for (1000).
 */
export const UNPRIORITISED = 1_001;

/** What a BullMQ "generate" job carries. The database row stays the source of truth; this is the worker's copy. */
export interface GeneratePayload {
  jobId: string;
  job: ResolvedJob;
  submittedAt: number;
}

/** An approximate image of the latents at one step (a job asked with `preview`): latent-sized PNG, base64. */
export interface StepPreview {
  width: number;
  height: number;
  pngBase64: string;
}

export interface LiveProgress {
  step: number;
  totalSteps: number;
  /** Only on the steps a preview was made for; the live channel carries it, the database never does. */
  preview?: StepPreview;
}

/**
 * The generation queue as the API sees it: add, remove a waiting job, read live progress, and signal cancellation of
 * a running job to whichever worker holds it (a Redis key it checks + a pub/sub message it listens to).
 */
export class JobQueue {
  readonly queue: Queue<GeneratePayload>;

  constructor(
    private readonly connection: IORedis,
    private readonly prefix: string,
    private readonly attempts: number,
  ) {
    // The events stream is only read live (JobEventsHub; final states come from the database), and step previews
    // (a few KiB each) ride on its progress events: a shorter stream than BullMQ's 10 000 bounds Redis memory.
    this.queue = new Queue<GeneratePayload>(GENERATE_QUEUE, { connection, prefix, streams: { events: { maxLen: EVENTS_MAX_LEN } } });
  }

  static cancelChannel(prefix: string): string {
    return `${prefix}:cancel`;
  }

  static cancelKey(prefix: string, jobId: string): string {
    return `${prefix}:cancel:${jobId}`;
  }

  async add(payload: GeneratePayload): Promise<void> {
    await this.queue.add("generate", payload, {
      jobId: payload.jobId,
      priority: payload.job.priority ?? UNPRIORITISED,
      attempts: this.attempts,
      backoff: { type: "fixed", delay: 500 },
      removeOnComplete: { age: 3600, count: 1000 },
      removeOnFail: { age: 24 * 3600 },
    });
  }

  /** Removes a job that has not started; false when a worker already holds it. */
  async removeWaiting(jobId: string): Promise<boolean> {
    const job = await this.queue.getJob(jobId);
    if (!job) return false;
    const state = await job.getState();
    if (state !== "waiting" && state !== "prioritized" && state !== "delayed" && state !== "waiting-children") return false;
    try {
      await job.remove();
      return true;
    } catch {
      return false; // a worker took it between the check and the removal
    }
  }

  /** Removes a finished job's BullMQ entry (DELETE /jobs/{id}); one still locked by a worker is left to expire. */
  async removeFinished(jobId: string): Promise<boolean> {
    const job = await this.queue.getJob(jobId);
    if (!job) return false;
    const state = await job.getState();
    if (state !== "completed" && state !== "failed") return false;
    await job.remove();
    return true;
  }

  /** BullMQ's state of a job ("missing" when Redis has no such job, e.g. after losing its data). */
  async state(jobId: string): Promise<{ state: string; failedReason?: string }> {
    const job = await this.queue.getJob(jobId);
    if (!job) return { state: "missing" };
    return { state: await job.getState(), failedReason: job.failedReason };
  }

  async signalCancel(jobId: string): Promise<void> {
    await this.connection.set(JobQueue.cancelKey(this.prefix, jobId), "1", "EX", 3600);
    await this.connection.publish(JobQueue.cancelChannel(this.prefix), jobId);
  }

  async liveProgress(jobId: string): Promise<LiveProgress | null> {
    const job = await this.queue.getJob(jobId);
    const p = job?.progress as Partial<LiveProgress> | undefined;
    if (p && typeof p === "object" && typeof p.step === "number" && typeof p.totalSteps === "number") {
      return { step: p.step, totalSteps: p.totalSteps };
    }
    return null;
  }

  events(): QueueEvents {
    // Connection options, not an instance: BullMQ then owns the connection and closes it with the QueueEvents
    // (a handed-in instance would outlive close() and keep reconnecting).
    return new QueueEvents(GENERATE_QUEUE, { connection: { ...this.connection.options, maxRetriesPerRequest: null }, prefix: this.prefix });
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}
