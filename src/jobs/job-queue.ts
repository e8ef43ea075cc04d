import { Queue, QueueEvents } from "bullmq";
import type IORedis from "ioredis";
import type { ResolvedJob } from "./jobs.dto";
import { DEFAULT_PRIORITY } from "./fair-use";

export const GENERATE_QUEUE = "generate";
/** Approximate length the "generate" events stream is trimmed to (see the constructor). */
export const EVENTS_MAX_LEN = 2_000;

/** What a BullMQ "generate" job carries. The database row stays the source of truth; this is the worker's copy. */
export interface GeneratePayload {
  jobId: string;
  job: ResolvedJob;
  submittedAt: number;
}

// Live progress travels on the job events channel, not through BullMQ; re-exported for the modules that name it here.
export type { LiveProgress, StepPreview } from "./job-events-channel";

/**
 * The generation queue as the API sees it: add, remove a waiting job or a finished job's entry, and read BullMQ's state
 * of a job for the reconciler. Transport only: job state is the database row's (jobs.repository.ts); cancelling a
 * running job goes through the CancelBus, live progress through the JobEventsChannel.
 */
export class JobQueue {
  readonly queue: Queue<GeneratePayload>;

  constructor(
    private readonly connection: IORedis,
    private readonly prefix: string,
    private readonly attempts: number,
  ) {
    // Nothing of ours reads the events stream (live events have their own channel); a shorter stream than BullMQ's
    // 10 000 bounds the Redis memory it takes.
    this.queue = new Queue<GeneratePayload>(GENERATE_QUEUE, { connection, prefix, streams: { events: { maxLen: EVENTS_MAX_LEN } } });
  }

  async add(payload: GeneratePayload): Promise<void> {
    await this.queue.add("generate", payload, {
      jobId: payload.jobId,
      // BullMQ runs jobs without a priority before prioritised ones; the API promises that a job naming none has the
      // default, the lowest, so every job is queued with one.
      priority: payload.job.priority ?? DEFAULT_PRIORITY,
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

  /** BullMQ's own event stream (tests and the bench count completions with it). */
  events(): QueueEvents {
    // Connection options, not an instance: BullMQ then owns the connection and closes it with the QueueEvents
    // (a handed-in instance would outlive close() and keep reconnecting).
    return new QueueEvents(GENERATE_QUEUE, { connection: { ...this.connection.options, maxRetriesPerRequest: null }, prefix: this.prefix });
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}
