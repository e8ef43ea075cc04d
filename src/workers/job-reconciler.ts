import { isErrorCode } from "../backends/error-codes";
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

/** "CODE: message" (how the worker's UnrecoverableError reads) → CODE; a stall limit and the like → ENGINE_INTERNAL. */
export function failureCode(reason: string | undefined): string {
  const m = /^([A-Z_]+): /.exec(reason ?? "");
  return m && isErrorCode(m[1]) ? m[1] : "ENGINE_INTERNAL";
}

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
    // completed with an unfinished row cannot come from our processor (it writes the row first); treat it as lost
    const reason = state === "failed" ? (failedReason ?? "failed in the queue") : "finished in the queue without a recorded result";
    if (await deps.finish(row.id, "failed", failureCode(reason), reason)) report.failed++;
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
