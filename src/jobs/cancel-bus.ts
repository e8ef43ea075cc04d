import type IORedis from "ioredis";

/** How long a cancel request is remembered: longer than any job waits in the queue and runs. */
const CANCEL_TTL_S = 3600;

/**
 * Cancellation of a job a worker may already hold, on both sides. The API (`request`) sets a key and publishes the id;
 * a worker checks the key before it starts a job (`isRequested`: the message may have gone out before it listened)
 * and listens for the message while it runs one (`listen`). The key and the channel are named here and nowhere else.
 */
export class CancelBus {
  constructor(
    private readonly redis: IORedis,
    private readonly prefix: string,
  ) {}

  private get channel(): string {
    return `${this.prefix}:cancel`;
  }

  private key(jobId: string): string {
    return `${this.prefix}:cancel:${jobId}`;
  }

  /** Enqueue side: asks whichever worker holds the job to stop it. The key first, so a worker can never miss both. */
  async request(jobId: string): Promise<void> {
    await this.redis.set(this.key(jobId), "1", "EX", CANCEL_TTL_S);
    await this.redis.publish(this.channel, jobId);
  }

  /** Consume side: was the job cancelled before this worker started listening for it? */
  async isRequested(jobId: string): Promise<boolean> {
    return (await this.redis.exists(this.key(jobId))) === 1;
  }

  /**
   * Consume side: calls `onCancel(jobId)` for each request from now on (on its own connection: a subscribed connection
   * can do nothing else). Resolves once subscribed; the returned function unsubscribes and closes that connection.
   */
  async listen(onCancel: (jobId: string) => void): Promise<() => Promise<void>> {
    // Commands wait for the connection (not fail fast as a producer's do): subscribing may start while Redis is away.
    const subscriber = this.redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null });
    subscriber.on("error", () => undefined); // it reconnects (and resubscribes) by itself
    subscriber.on("message", (channel: string, jobId: string) => {
      if (channel === this.channel) onCancel(jobId);
    });
    await subscriber.subscribe(this.channel);
    return async () => {
      await subscriber.quit().catch(() => undefined);
    };
  }
}
