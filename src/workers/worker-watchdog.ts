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
  /**
   * Jobs this worker has taken since it started (any count that grows with each job taken). A change means it is
   * taking work: "idle while jobs wait" seen at a few ticks between short jobs, or before a pause of the whole process
   * (SIGSTOP, a sleeping laptop), is not a stuck worker.
   */
  jobsTaken?(): number;
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
  private takenAtSuspicion: number | undefined;
  recreations = 0;

  constructor(
    private readonly worker: WatchedWorker,
    private readonly boundMs: number,
    private readonly onError: (err: Error) => void = () => undefined,
  ) {}

  start(): void {
    if (this.boundMs <= 0) return;
    const every = Math.max(100, Math.floor(this.boundMs / 4));
    let last = Date.now();
    this.timer = setInterval(() => {
      const now = Date.now();
      // A timer this late means the whole process was paused (SIGSTOP, a suspended VM or laptop): what was seen before
      // the pause says nothing about the worker now, and it has had no chance to act since; the bound starts again.
      if (now - last > 2 * every) this.suspectSince = undefined;
      last = now;
      void this.tick(now);
    }, every);
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
      const taken = this.worker.jobsTaken?.();
      if (!suspect || (this.suspectSince !== undefined && taken !== this.takenAtSuspicion)) {
        this.suspectSince = undefined;
        if (!suspect) return;
      }
      if (this.suspectSince === undefined) {
        this.suspectSince = now;
        this.takenAtSuspicion = taken;
      }
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
