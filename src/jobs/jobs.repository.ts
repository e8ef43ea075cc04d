import type { Db } from "../infra/prisma";
import type { Job } from "../generated/prisma/client";
import type { EngineName, JobStatus, ResolvedJob } from "./jobs.dto";

export type JobRecord = Job;

const TERMINAL: JobStatus[] = ["completed", "failed", "cancelled"];

export interface CompletedResult {
  device: string | null;
  png: Buffer;
  sha256: string;
  width: number;
  height: number;
  loadMs: number | null;
  generateMs: number | null;
  postprocessMs: number | null;
}

/** All job persistence. State changes are conditional updates so a late or repeated write can never undo a final state. */
export class JobsRepository {
  constructor(private readonly db: Db) {}

  create(id: string, job: ResolvedJob, opts: { idempotencyKey?: string; source: string }): Promise<JobRecord> {
    return this.db.job.create({
      data: {
        id,
        status: "queued",
        engine: job.engine,
        model: job.model,
        request: JSON.stringify(job),
        prompt: job.prompt,
        width: job.width,
        height: job.height,
        steps: job.steps,
        seed: job.seed,
        progressTotal: job.steps,
        idempotencyKey: opts.idempotencyKey ?? null,
        source: opts.source,
      },
    });
  }

  find(id: string): Promise<JobRecord | null> {
    return this.db.job.findUnique({ where: { id }, omit: { resultPng: true } }) as Promise<JobRecord | null>;
  }

  findByIdempotencyKey(key: string): Promise<JobRecord | null> {
    return this.db.job.findUnique({ where: { idempotencyKey: key }, omit: { resultPng: true } }) as Promise<JobRecord | null>;
  }

  async image(id: string): Promise<Buffer | null> {
    const row = await this.db.job.findUnique({ where: { id }, select: { resultPng: true } });
    return row?.resultPng ? Buffer.from(row.resultPng) : null;
  }

  /** Newest first; the cursor is the last id of the previous page (ids sort by creation, see ids.ts). */
  list(filter: { status?: JobStatus; engine?: EngineName; limit: number; cursor?: string }): Promise<JobRecord[]> {
    return this.db.job.findMany({
      where: {
        ...(filter.status ? { status: filter.status } : {}),
        ...(filter.engine ? { engine: filter.engine } : {}),
        ...(filter.cursor ? { id: { lt: filter.cursor } } : {}),
      },
      orderBy: { id: "desc" },
      take: filter.limit,
      omit: { resultPng: true },
    }) as Promise<JobRecord[]>;
  }

  /** `worker` (hostname:pid) records which process runs this attempt: with many workers, where a job went. */
  async markActive(id: string, attempt: number, queueMs: number, worker: string | null = null): Promise<boolean> {
    const res = await this.db.job.updateMany({
      where: { id, status: { in: ["queued", "active"] } },
      data: { status: "active", startedAt: new Date(), attempts: attempt, queueMs, worker, errorCode: null, errorMessage: null },
    });
    return res.count === 1;
  }

  async setDevice(id: string, device: string): Promise<void> {
    await this.db.job.updateMany({ where: { id, status: "active" }, data: { device } });
  }

  async saveProgress(id: string, step: number, totalSteps: number): Promise<void> {
    await this.db.job.updateMany({ where: { id, status: "active" }, data: { progressStep: step, progressTotal: totalSteps } });
  }

  /** Idempotent: only a job not yet final takes the result, so a retried or duplicated write lands once. */
  async complete(id: string, r: CompletedResult): Promise<boolean> {
    const res = await this.db.job.updateMany({
      where: { id, status: { notIn: TERMINAL } },
      data: {
        status: "completed",
        device: r.device,
        resultPng: new Uint8Array(r.png),
        resultSha256: r.sha256,
        resultWidth: r.width,
        resultHeight: r.height,
        loadMs: r.loadMs,
        generateMs: r.generateMs,
        postprocessMs: r.postprocessMs,
        finishedAt: new Date(),
      },
    });
    return res.count === 1;
  }

  async finish(id: string, status: "failed" | "cancelled", code: string, message: string): Promise<boolean> {
    const res = await this.db.job.updateMany({
      where: { id, status: { notIn: TERMINAL } },
      data: { status, errorCode: code, errorMessage: message.slice(0, 2000), finishedAt: new Date() },
    });
    return res.count === 1;
  }

  /** Unfinished rows, oldest first, for the worker's reconciliation with the queue (job-reconciler.ts). */
  unfinished(
    status: "queued" | "active",
    limit: number,
    olderThan: Date,
  ): Promise<Array<Pick<JobRecord, "id" | "status" | "startedAt" | "createdAt" | "request">>> {
    return this.db.job.findMany({
      where: { status, createdAt: { lt: olderThan } },
      orderBy: { createdAt: "asc" },
      take: limit,
      select: { id: true, status: true, startedAt: true, createdAt: true, request: true },
    });
  }

  /**
   * Back to queued, but only if the row is still the attempt that was looked at (same status and startedAt): a worker
   * that picked the job up again in the meantime set a new startedAt, and its "active" must stand.
   */
  async requeueIfUnchanged(id: string, seen: { status: string; startedAt: Date | null }, code: string, message: string): Promise<boolean> {
    const res = await this.db.job.updateMany({
      where: { id, status: seen.status, startedAt: seen.startedAt },
      data: { status: "queued", errorCode: code, errorMessage: message.slice(0, 2000), progressStep: 0 },
    });
    return res.count === 1;
  }

  /** Frees a job's idempotency key (expired, or the job never reached the queue) so a new job may take it. */
  async releaseIdempotencyKey(id: string): Promise<void> {
    await this.db.job.updateMany({ where: { id }, data: { idempotencyKey: null } });
  }

  /**
   * Retention: drops the stored image of completed jobs finished before `before`, keeping the record. resultSha256 is
   * cleared with it (it describes stored bytes, and there are none): a completed row without one is "pruned".
   */
  async pruneImagesFinishedBefore(before: Date): Promise<number> {
    const res = await this.db.job.updateMany({
      where: { status: "completed", resultSha256: { not: null }, finishedAt: { lt: before } },
      data: { resultPng: null, resultSha256: null },
    });
    return res.count;
  }

  /** Retention: ids of completed jobs that still hold an image, past the newest `keep` of them (oldest last). */
  async imagesBeyondNewest(keep: number, limit: number): Promise<string[]> {
    const rows = await this.db.job.findMany({
      where: { status: "completed", resultSha256: { not: null } },
      orderBy: { createdAt: "desc" },
      skip: keep,
      take: limit,
      select: { id: true },
    });
    return rows.map((r) => r.id);
  }

  async pruneImages(ids: string[]): Promise<number> {
    if (ids.length === 0) return 0;
    const res = await this.db.job.updateMany({
      where: { id: { in: ids }, status: "completed" },
      data: { resultPng: null, resultSha256: null },
    });
    return res.count;
  }

  /** Deletes a finished job's record; false when it is not (or no longer) final, so a running job is never removed. */
  async deleteFinished(id: string): Promise<boolean> {
    const res = await this.db.job.deleteMany({ where: { id, status: { in: TERMINAL } } });
    return res.count === 1;
  }

  /** A failed attempt that BullMQ will retry: back to queued, keeping the error for the record. */
  async requeue(id: string, code: string, message: string): Promise<void> {
    await this.db.job.updateMany({
      where: { id, status: "active" },
      data: { status: "queued", errorCode: code, errorMessage: message.slice(0, 2000), progressStep: 0 },
    });
  }
}
