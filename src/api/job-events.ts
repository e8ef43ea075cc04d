import type { Logger } from "../infra/logger";
import type { JobEventsChannel, LiveProgress } from "../jobs/job-events-channel";
import type { JobView } from "../jobs/jobs.dto";
import type { JobsService } from "../jobs/jobs.service";

export const FINAL_STATUSES: ReadonlySet<JobView["status"]> = new Set(["completed", "failed", "cancelled"]);

export interface JobWatcher {
  progress?(p: LiveProgress): void;
  /** Called once with the job's final state, read from the database. */
  final(view: JobView): void;
}

export interface JobEventsOptions {
  /** How often watched jobs are re-read from the database in case a final-state message was lost. */
  safetyPollMs?: number;
}

/**
 * Pub/sub delivers at most once: a final-state message is lost when its publisher dies between the database write and
 * the publish, or Redis is unreachable at that moment. Rare, so the net is slow.
 */
export const SAFETY_POLL_MS = 10_000;

/**
 * Live job updates for this API process, whichever process runs the job: the job events channel (Redis pub/sub) fanned
 * out to per-job watchers (SSE streams, WebSocket clients, waiting legacy requests). Steps are relayed as they come; a
 * final-state message only says "look now": the final state always comes from the database (JobsService.get), which
 * the repository wrote before it sent the message.
 */
export class JobEventsHub {
  private unsubscribe: (() => Promise<void>) | undefined;
  private readonly watchers = new Map<string, Set<JobWatcher>>();
  /** Jobs being read now, and those a message asked about meanwhile (that read may have started before the write). */
  private readonly checking = new Set<string>();
  private readonly recheck = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly channel: Pick<JobEventsChannel, "subscribe">,
    private readonly jobs: Pick<JobsService, "get">,
    private readonly logger: Logger,
    private readonly opts: JobEventsOptions = {},
  ) {}

  async start(): Promise<void> {
    this.unsubscribe = await this.channel.subscribe({
      message: (event) => ("final" in event ? void this.check(event.jobId) : this.onProgress(event.jobId, event.progress)),
      // final states written while the subscription was down were announced to nobody
      resubscribed: () => this.checkAll(),
    });
    this.timer = setInterval(() => this.checkAll(), this.opts.safetyPollMs ?? SAFETY_POLL_MS);
    this.timer.unref();
  }

  /** Watches one job; the current state is checked at once, so a job that already ended answers immediately. */
  watch(jobId: string, watcher: JobWatcher): () => void {
    let set = this.watchers.get(jobId);
    if (!set) {
      set = new Set();
      this.watchers.set(jobId, set);
    }
    set.add(watcher);
    void this.check(jobId);
    return () => this.unwatch(jobId, watcher);
  }

  /** Resolves with the final state; rejects with an AbortError when the signal fires (the watcher is removed). */
  waitForFinal(jobId: string, signal?: AbortSignal): Promise<JobView> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortError());
      const onAbort = () => {
        stop();
        reject(abortError());
      };
      const stop = this.watch(jobId, {
        final: (view) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(view);
        },
      });
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Number of jobs with at least one watcher (tests check that nothing leaks). */
  watchedJobs(): number {
    return this.watchers.size;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.watchers.clear();
    await this.unsubscribe?.();
  }

  private unwatch(jobId: string, watcher: JobWatcher): void {
    const set = this.watchers.get(jobId);
    if (!set) return;
    set.delete(watcher);
    if (set.size === 0) this.watchers.delete(jobId);
  }

  private checkAll(): void {
    for (const jobId of this.watchers.keys()) void this.check(jobId);
  }

  private onProgress(jobId: string, progress: LiveProgress): void {
    const set = this.watchers.get(jobId);
    if (!set) return;
    for (const w of [...set]) {
      try {
        w.progress?.(progress);
      } catch (err) {
        this.logger.warn({ job: jobId, err: (err as Error).message }, "job watcher failed on progress");
      }
    }
  }

  /** Reads the job; when final, hands it to every watcher and forgets them. */
  private async check(jobId: string): Promise<void> {
    if (this.closed || !this.watchers.has(jobId)) return;
    if (this.checking.has(jobId)) {
      this.recheck.add(jobId);
      return;
    }
    this.checking.add(jobId);
    let view: JobView | undefined;
    try {
      view = await this.jobs.get(jobId);
    } catch (err) {
      this.logger.debug({ job: jobId, err: (err as Error).message }, "job state read failed");
    } finally {
      this.checking.delete(jobId);
    }
    const again = this.recheck.delete(jobId);
    if (!view || !FINAL_STATUSES.has(view.status)) {
      if (again) void this.check(jobId);
      return;
    }
    const set = this.watchers.get(jobId);
    if (!set) return;
    this.watchers.delete(jobId);
    for (const w of set) {
      try {
        w.final(view);
      } catch (err) {
        this.logger.warn({ job: jobId, err: (err as Error).message }, "job watcher failed on final state");
      }
    }
  }
}

function abortError(): Error {
  const err = new Error("stopped waiting for the job");
  err.name = "AbortError";
  return err;
}
