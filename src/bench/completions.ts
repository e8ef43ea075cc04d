import { QueueEvents } from "bullmq";
import type IORedis from "ioredis";
import { JobEventsChannel } from "../jobs/job-events-channel";
import { workerConnection } from "../infra/redis";

export interface Completion {
  /** performance.now() when the final-state event reached us. */
  at: number;
  ok: boolean;
  detail: string;
}

/** Where completions come from: the service's job events, or a bare BullMQ queue's events (the raw phase (c)). */
export type CompletionSource = { kind: "jobEvents"; redisUrl: string; prefix: string } | { kind: "queueEvents"; redisUrl: string; prefix: string; queueName: string };

/**
 * Turns a completion stream into per-job promises, with no poll-interval granularity. For the service it is the
 * final-state message the repository publishes once a row is final (JobEventsChannel): the very message the API's
 * WebSocket and SSE watchers act on, so the bench sees a job finish when a client of the service can. For bare BullMQ
 * it is QueueEvents (XREAD BLOCK). Events that arrive before anyone waits (possible when a job is faster than the answer
 * that names it) are kept until asked for. It owns its Redis connection: BullMQ never closes a connection it was
 * handed, and one left open after the bench's private redis-server stops would retry (and log ECONNREFUSED) until the
 * process exits.
 */
export class CompletionTracker {
  private readonly done = new Map<string, Completion>();
  private readonly waiters = new Map<string, (c: Completion) => void>();
  private readonly connection: IORedis;
  private readonly started: Promise<() => Promise<void>>;

  constructor(source: CompletionSource) {
    this.connection = workerConnection(source.redisUrl);
    this.started = source.kind === "jobEvents" ? this.fromJobEvents(source.prefix) : this.fromQueueEvents(source.queueName, source.prefix);
  }

  private fromJobEvents(prefix: string): Promise<() => Promise<void>> {
    return new JobEventsChannel(this.connection, prefix).subscribe({
      message: (event) => {
        if ("final" in event) this.settle(event.jobId, { at: performance.now(), ok: event.final === "completed", detail: event.final });
      },
      resubscribed: () => undefined,
    });
  }

  private async fromQueueEvents(queueName: string, prefix: string): Promise<() => Promise<void>> {
    const events = new QueueEvents(queueName, { connection: this.connection, prefix });
    events.on("completed", ({ jobId, returnvalue }) => this.settle(jobId, { at: performance.now(), ok: true, detail: String(returnvalue) }));
    events.on("failed", ({ jobId, failedReason }) => this.settle(jobId, { at: performance.now(), ok: false, detail: failedReason }));
    await events.waitUntilReady();
    return () => events.close();
  }

  async ready(): Promise<void> {
    await this.started;
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
    const stop = await this.started.catch(() => undefined);
    await stop?.();
    await this.connection.quit().catch(() => undefined);
  }
}
