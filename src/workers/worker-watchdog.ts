/** What the watchdog reads about one BullMQ worker; small so it can be tested without Redis. */
export interface WatchedWorker {
  /** The worker's Redis connection is up (nothing can be judged while it is not). */
  connected(): boolean;
  /** BullMQ's own view (`Worker.isRunning()`): false after its main loop ended. */
  running(): boolean;
  /** Jobs this worker runs now. */
  activeJobs(): number;
  /** Jobs ready to run in the queue (wait + prioritized); may throw while Redis is flaky. */
  readyJobs(): Promise<number>;
  /** Replace the worker by a fresh one. */
  recreate(reason: string): Promise<void>;
}

/**
 * BullMQ reconnects by itself after a Redis restart, but its main loop waits `runRetryDelay` (15 s) after an error and
 * an old blocking connection can sit on a dead socket. This catches a worker that, with Redis reachable, is not running
 * or stays idle while jobs wait, for longer than `boundMs`, and recreates it — the one thing a worker process
 * cannot do for itself otherwise without a restart.
 */
export class WorkerWatchdog {
  private timer: NodeJS.Timeout | undefined;
  private suspectSince: number | undefined;
  private ticking = false;
  recreations = 0;

  constructor(
    private readonly worker: WatchedWorker,
    private readonly boundMs: number,
    private readonly onError: (err: Error) => void = () => undefined,
  ) {}

  start(): void {
    if (this.boundMs <= 0) return;
    this.timer = setInterval(() => void this.tick(), Math.max(100, Math.floor(this.boundMs / 4)));
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One check; exported for tests. */
  async tick(now = Date.now()): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      const suspect = await this.suspicious();
      if (!suspect) {
        this.suspectSince = undefined;
        return;
      }
      this.suspectSince ??= now;
      if (now - this.suspectSince < this.boundMs) return;
      this.suspectSince = undefined;
      this.recreations++;
      await this.worker.recreate(suspect);
    } catch (err) {
      this.suspectSince = undefined;
      this.onError(err as Error);
    } finally {
      this.ticking = false;
    }
  }

  private async suspicious(): Promise<string | undefined> {
    if (!this.worker.connected()) return undefined;
    if (!this.worker.running()) return "worker is not running";
    // Busy is healthy; with no job in hand and work waiting, a live worker would have taken it within drainDelay.
    if (this.worker.activeJobs() > 0) return undefined;
    return (await this.worker.readyJobs()) > 0 ? "worker idle while jobs wait" : undefined;
  }
}
