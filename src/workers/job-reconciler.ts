import { decodeFailure } from "../backends/error-codes";
import type { Logger } from "../infra/logger";
import type { GeneratePayload } from "../jobs/job-queue";
import type { ResolvedJob } from "../jobs/jobs.dto";
import type { JobRecord } from "../jobs/jobs.repository";

type Row = Pick<JobRecord, "id" | "status" | "startedAt" | "createdAt" | "request">;

/** The parts of JobsRepository and JobQueue reconciliation needs (narrow, so a spec can fake them). */
export interface ReconcileDeps {
  rows(status: "queued" | "active", limit: number, olderThan: Date): Promise<Row[]>;
  requeueIfUnchanged(id: string, seen: { status: string; startedAt: Date | null }, code: string, message: string): Promise<boolean>;
  finish(id: string, status: "failed", code: string, message: string): Promise<boolean>;
  state(jobId: string): Promise<{ state: string; failedReason?: string }>;
  add(payload: GeneratePayload): Promise<void>;
  logger: Logger;
}

export interface ReconcileReport {
  requeued: number;
  readded: number;
  failed: number;
}

const WAITING = new Set(["waiting", "prioritized", "delayed", "waiting-children"]);

/**
 * Makes one unfinished database row agree with BullMQ, which decides who runs what. The database is what users read,
 * so it must never say `active` for a job that BullMQ handed back (a worker died: stalled → waiting) or gave up on (too
 * many stalls → failed, which runs none of our code), and a job Redis lost (no AOF, flushed) is queued again from the
 * request the row keeps. Every write is conditional, so racing a worker that picks the job up is harmless.
 */
export async function reconcileRow(
  row: Row,
  deps: ReconcileDeps,
  report: ReconcileReport = { requeued: 0, readded: 0, failed: 0 },
): Promise<ReconcileReport> {
  const { state, failedReason } = await deps.state(row.id);
  if (state === "missing") {
    const job = JSON.parse(row.request) as ResolvedJob;
    // The same jobId: if the job reappeared meanwhile (a submit finishing its add), BullMQ ignores the duplicate.
    await deps.add({ jobId: row.id, job, submittedAt: row.createdAt.getTime() });
    report.readded++;
    if (row.status === "active") await deps.requeueIfUnchanged(row.id, row, "ENGINE_INTERNAL", "the queue lost this job; queued again");
    deps.logger.warn({ job: row.id, was: row.status }, "job missing from the queue; queued again from the database");
  } else if (WAITING.has(state) && row.status === "active") {
    if (await deps.requeueIfUnchanged(row.id, row, "ENGINE_INTERNAL", "its worker stopped mid-job; queued again")) report.requeued++;
  } else if (state === "failed" || state === "completed") {
    // Our processor writes the row before BullMQ finishes the job, so this is a write that never landed (or a stall
    // limit, which runs none of our code); completed in the queue with no result recorded counts as lost.
    const failure =
      state === "failed"
        ? decodeFailure(failedReason)
        : { code: "ENGINE_INTERNAL", message: "finished in the queue without a recorded result" };
    if (await deps.finish(row.id, "failed", failure.code, failure.message)) report.failed++;
  }
  return report;
}

/** One pass over unfinished rows (oldest first, bounded); rows younger than `minAgeMs` may still be mid-submit. */
export async function reconcileJobs(deps: ReconcileDeps, opts: { limit?: number; minAgeMs?: number } = {}): Promise<ReconcileReport> {
  const report: ReconcileReport = { requeued: 0, readded: 0, failed: 0 };
  const olderThan = new Date(Date.now() - (opts.minAgeMs ?? 5_000));
  // Both lists first: a row this pass moves from active to queued must not be looked at twice.
  const rows = [...(await deps.rows("active", opts.limit ?? 500, olderThan)), ...(await deps.rows("queued", opts.limit ?? 500, olderThan))];
  for (const row of rows) {
    try {
      await reconcileRow(row, deps, report);
    } catch (err) {
      deps.logger.warn({ job: row.id, err: (err as Error).message }, "could not reconcile job");
    }
  }
  if (report.requeued || report.readded || report.failed) deps.logger.info({ ...report }, "reconciled jobs with the queue");
  return report;
}

/**
 * When reconciliation runs in a worker: at start-up (rows a worker that died before this one left active), on every
 * stall BullMQ reports, and every `everyMs`. One pass at a time.
 */
export class JobReconciler {
  private timer: NodeJS.Timeout | undefined;
  private pass: Promise<unknown> | undefined;

  constructor(private readonly deps: ReconcileDeps & { find(id: string): Promise<Row | null> }) {}

  start(everyMs: number): void {
    if (everyMs > 0) {
      this.timer = setInterval(() => void this.runAll(), everyMs);
      this.timer.unref();
    }
  }

  async runAll(): Promise<void> {
    if (this.pass) return;
    this.pass = reconcileJobs(this.deps)
      .catch((err) => this.deps.logger.warn({ err: (err as Error).message }, "job reconciliation failed"))
      .finally(() => (this.pass = undefined));
    await this.pass;
  }

  async runOne(jobId: string): Promise<void> {
    try {
      const row = await this.deps.find(jobId);
      if (row && (row.status === "active" || row.status === "queued")) await reconcileRow(row, this.deps);
    } catch (err) {
      this.deps.logger.warn({ job: jobId, err: (err as Error).message }, "could not reconcile stalled job");
    }
  }

  /** Stops the timer and waits for a pass in progress (it writes to the database, which closes next). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.pass;
  }
}
