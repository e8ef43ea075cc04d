import { QueueEvents } from "bullmq";
import type IORedis from "ioredis";
import { workerConnection } from "../infra/redis";

export interface Completion {
  /** performance.now() when the completed/failed event reached us. */
  at: number;
  ok: boolean;
  detail: string;
}

/**
 * Turns a QueueEvents stream into per-job promises. Completion is taken from BullMQ's own event stream (XREAD BLOCK),
 * not from polling GET /jobs/{id}, so latencies carry no poll-interval granularity. Events that arrive before anyone
 * waits (possible when a job is faster than the HTTP answer that names it) are kept until asked for.
 * It owns its Redis connection: BullMQ never closes a connection it was handed, and one left open after the bench's
 * private redis-server stops would retry (and log ECONNREFUSED) until the process exits.
 */
export class CompletionTracker {
  private readonly done = new Map<string, Completion>();
  private readonly waiters = new Map<string, (c: Completion) => void>();
  private readonly connection: IORedis;
  private readonly events: QueueEvents;

  constructor(opts: { queueName: string; redisUrl: string; prefix: string }) {
    this.connection = workerConnection(opts.redisUrl);
    const events = new QueueEvents(opts.queueName, { connection: this.connection, prefix: opts.prefix });
    this.events = events;
    events.on("completed", ({ jobId, returnvalue }) => this.settle(jobId, { at: performance.now(), ok: true, detail: String(returnvalue) }));
    events.on("failed", ({ jobId, failedReason }) => this.settle(jobId, { at: performance.now(), ok: false, detail: failedReason }));
  }

  async ready(): Promise<void> {
    await this.events.waitUntilReady();
  }

  private settle(jobId: string, c: Completion): void {
    const waiter = this.waiters.get(jobId);
    if (waiter) {
      this.waiters.delete(jobId);
      waiter(c);
    } else {
      this.done.set(jobId, c);
    }
  }

  wait(jobId: string, timeoutMs: number): Promise<Completion> {
    const early = this.done.get(jobId);
    if (early) {
      this.done.delete(jobId);
      return Promise.resolve(early);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(jobId);
        reject(new Error(`job ${jobId} did not finish within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.set(jobId, (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
  }

  async close(): Promise<void> {
    await this.events.close();
    await this.connection.quit().catch(() => undefined);
  }
}
