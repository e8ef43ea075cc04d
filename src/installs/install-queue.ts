import { Queue } from "bullmq";
import type IORedis from "ioredis";

export const INSTALL_QUEUE = "install";

export interface InstallPayload {
  installId: string;
}

/**
 * The third BullMQ queue: hub downloads, run by the install worker — never inside a generation or the API process.
 * One attempt: a worker that dies mid-download is not a failed attempt (BullMQ's stalled-job recovery hands the job to
 * another worker, which resumes the files); a hub or disk error is final and asking again starts a new install that
 * keeps the bytes already fetched.
 */
export class InstallQueue {
  readonly queue: Queue<InstallPayload>;

  constructor(connection: IORedis, prefix: string) {
    this.queue = new Queue<InstallPayload>(INSTALL_QUEUE, { connection, prefix });
  }

  async add(payload: InstallPayload): Promise<void> {
    await this.queue.add("install", payload, {
      jobId: payload.installId,
      attempts: 1,
      removeOnComplete: { age: 24 * 3600 },
      removeOnFail: { age: 7 * 24 * 3600 },
    });
  }

  /** BullMQ's state of an install ("missing" when Redis has no such job, e.g. after losing its data). */
  async state(installId: string): Promise<{ state: string; failedReason?: string }> {
    const job = await this.queue.getJob(installId);
    if (!job) return { state: "missing" };
    return { state: await job.getState(), failedReason: job.failedReason };
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}
