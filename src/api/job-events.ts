import type { QueueEvents } from "bullmq";
import type { Logger } from "../infra/logger";
import type { JobQueue, LiveProgress, StepPreview } from "../jobs/job-queue";
import type { JobView } from "../jobs/jobs.dto";
import type { JobsService } from "../jobs/jobs.service";

export const FINAL_STATUSES: ReadonlySet<JobView["status"]> = new Set(["completed", "failed", "cancelled"]);

export interface JobWatcher {
  progress?(p: LiveProgress): void;
  /** Called once with the job's final state, read from the database. */
  final(view: JobView): void;
}

export interface JobEventsOptions {
  /** How often watched jobs are re-read from the database in case a queue event was missed. */
  safetyPollMs?: number;
}

/**
 * Live job updates for this API process, whichever process runs the worker: one BullMQ QueueEvents stream (Redis)
 * fanned out to per-job watchers (WebSocket clients, waiting legacy requests). Queue events only say "look now"; the
 * final state always comes from the database (JobsService.get), because a BullMQ "completed" job may have ended as
 * cancelled and a "removed" one was cancelled while queued.
 */
export class JobEventsHub {
  private events: QueueEvents | undefined;
  private readonly watchers = new Map<string, Set<JobWatcher>>();
  private readonly checking = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly queue: JobQueue,
    private readonly jobs: JobsService,
    private readonly logger: Logger,
    private readonly opts: JobEventsOptions = {},
  ) {}

  async start(): Promise<void> {
    const events = this.queue.events();
    this.events = events;
    events.on("progress", ({ jobId, data }) => this.onProgress(jobId, data));
    events.on("completed", ({ jobId }) => void this.check(jobId, 5));
    events.on("failed", ({ jobId }) => void this.check(jobId, 5));
    events.on("removed", ({ jobId }) => void this.check(jobId, 5));
    events.on("error", (err) => this.logger.warn({ err: err.message }, "queue events stream error"));
    await events.waitUntilReady();
    // A missed event (Redis blip, a final write that landed after its event) would leave a watcher waiting forever.
    this.timer = setInterval(() => {
      for (const jobId of this.watchers.keys()) void this.check(jobId, 0);
    }, this.opts.safetyPollMs ?? 2_000);
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
    void this.check(jobId, 0);
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
    await this.events?.close().catch(() => undefined);
  }

  private unwatch(jobId: string, watcher: JobWatcher): void {
    const set = this.watchers.get(jobId);
    if (!set) return;
    set.delete(watcher);
    if (set.size === 0) this.watchers.delete(jobId);
  }

  private onProgress(jobId: string, data: unknown): void {
    const set = this.watchers.get(jobId);
    if (!set) return;
    const p = data as Partial<LiveProgress> | null;
    if (!p || typeof p !== "object" || typeof p.step !== "number" || typeof p.totalSteps !== "number") return;
    const progress: LiveProgress = { step: p.step, totalSteps: p.totalSteps };
    if (isStepPreview(p.preview)) progress.preview = p.preview;
    for (const w of [...set]) {
      try {
        w.progress?.(progress);
      } catch (err) {
        this.logger.warn({ job: jobId, err: (err as Error).message }, "job watcher failed on progress");
      }
    }
  }

  /**
   * Reads the job; when final, hands it to every watcher and forgets them. After a queue event the database write may
   * still be on its way (e.g. a stalled job's record is finished after BullMQ's event), so it re-reads a few times.
   */
  private async check(jobId: string, retries: number): Promise<void> {
    if (this.closed || !this.watchers.has(jobId) || this.checking.has(jobId)) {
      if (retries > 0 && this.checking.has(jobId)) setTimeout(() => void this.check(jobId, retries - 1), 100).unref();
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
    if (!view || !FINAL_STATUSES.has(view.status)) {
      if (retries > 0 && !this.closed) setTimeout(() => void this.check(jobId, retries - 1), 200).unref();
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

function isStepPreview(v: unknown): v is StepPreview {
  const p = v as Partial<StepPreview> | undefined;
  return !!p && typeof p === "object" && typeof p.pngBase64 === "string" && Number.isInteger(p.width) && Number.isInteger(p.height);
}

function abortError(): Error {
  const err = new Error("stopped waiting for the job");
  err.name = "AbortError";
  return err;
}
