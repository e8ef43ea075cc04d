import { databaseKindOf, Db, sqlExecutorOf } from "../infra/prisma";
import { dateOf, SqlExecutor } from "../infra/sql-executor";
import type { DatabaseKind } from "../infra/database-kind";
import { Prisma } from "../generated/prisma/client";
import type { Job } from "../generated/prisma/client";
import { columnIs, insertJob, isUniqueViolation, JobColumns, setList, statusIn } from "./job-sql";
import type { EngineName, JobPixelReport, JobStatus, ResolvedJob } from "./jobs.dto";

/** Candidates 1.. of a job with count > 1, without their bytes (candidate 0 is on the row itself). */
export type JobImageMeta = { index: number; sha256: string; width: number; height: number };
export type JobRecord = Job & { images?: JobImageMeta[] };

/** What reads of a job load besides its row: its extra candidates' descriptions, never bytes. */
const WITH_IMAGES = { images: { select: { index: true, sha256: true, width: true, height: true }, orderBy: { index: "asc" } } } as const;

/** Every Job column but the binary ones, which reads never return with the row. */
const READ_COLUMNS = Prisma.raw(
  Object.values(Prisma.JobScalarFieldEnum)
    .filter((name) => name !== "resultPng" && name !== "inputPng")
    .map((name) => `"${name}"`)
    .join(", "),
);

/** A raw Job row as Prisma's model API returns it: dates as Dates, the JSON column parsed (SQLite keeps it as text). */
function jobRow(row: Record<string, unknown>, images: JobImageMeta[]): JobRecord {
  const optionalDate = (v: unknown) => (v === null || v === undefined ? null : dateOf(v));
  const report = row.pixelReport;
  return {
    ...(row as unknown as Job),
    pixelReport: typeof report === "string" ? (JSON.parse(report) as Prisma.JsonValue) : ((report ?? null) as Prisma.JsonValue),
    createdAt: dateOf(row.createdAt),
    startedAt: optionalDate(row.startedAt),
    finishedAt: optionalDate(row.finishedAt),
    images: images.map((i) => ({ index: Number(i.index), sha256: i.sha256, width: Number(i.width), height: Number(i.height) })),
  };
}

export type FinalStatus = "completed" | "failed" | "cancelled";
const TERMINAL: FinalStatus[] = ["completed", "failed", "cancelled"];

/**
 * The job state machine: the statuses a row may move to from each status. The database row is the only truth about a
 * job; BullMQ only carries it to a worker. Every status write below is a conditional update on these from-states, so a
 * late, repeated or racing write (a worker presumed dead, a reconciler pass, a cancel) can never undo a final state.
 */
export const JOB_TRANSITIONS: Readonly<Record<JobStatus, readonly JobStatus[]>> = {
  // A worker takes it; it is cancelled or fails before any worker does. A result for it can still land: the reconciler
  // may have queued again a job whose worker only looked dead, and that worker's result is as good as the next one's.
  queued: ["active", "completed", "failed", "cancelled"],
  // active → active: another attempt (the job stalled and a second worker picked it up). → queued: a retry, a shutdown
  // hand-back, or the reconciler finding the job back in the queue.
  active: ["active", "queued", "completed", "failed", "cancelled"],
  completed: [],
  failed: [],
  cancelled: [],
};

export function canTransition(from: string, to: JobStatus): boolean {
  return (JOB_TRANSITIONS[from as JobStatus] ?? []).includes(to);
}

/** The from-states of `to`, as the condition of the update that moves a row there. */
function fromStates(to: JobStatus): JobStatus[] {
  return (Object.keys(JOB_TRANSITIONS) as JobStatus[]).filter((from) => canTransition(from, to));
}

/** Told once a row reached a final state (after the write landed), so watchers can read it at once. */
export interface FinalStateNotifier {
  finalized(jobId: string, status: FinalStatus): void;
}

export interface CompletedResult {
  device: string | null;
  png: Buffer;
  sha256: string;
  width: number;
  height: number;
  loadMs: number | null;
  generateMs: number | null;
  postprocessMs: number | null;
  /** The runner's PixelReport (the DTO's JobPixelReport); absent when the job had no pixel spec. */
  pixelReport?: JobPixelReport;
  /** Candidates 1.. of a job with count > 1, in index order (the fields above are candidate 0). */
  candidates?: Array<{ index: number; png: Buffer; sha256: string; width: number; height: number }>;
}

/** What a worker records when it takes a job. */
export interface AttemptStart {
  attempt: number;
  queueMs: number;
  /** hostname:pid of the process running it: with many workers, where a job went. */
  worker: string | null;
  /** The runner's device when it is known before the job starts (it may change it in the result). */
  device: string | null;
}

/** A second job under a client's idempotency key: the unique index refused the insert. */
export class DuplicateIdempotencyKey extends Error {}

/**
 * All job persistence. Status changes go through `transition` (JOB_TRANSITIONS); the other writes never touch status.
 * The writes every job makes are raw statements (job-sql.ts, for their cost); reads and rare writes use Prisma's API.
 */
export class JobsRepository {
  private readonly kind: DatabaseKind;
  private readonly sql: SqlExecutor;

  constructor(
    private readonly db: Db,
    private readonly notifier?: FinalStateNotifier,
  ) {
    this.kind = databaseKindOf(db);
    this.sql = sqlExecutorOf(db);
  }

  /** Moves a row to `to` if it is in one of its from-states (and matches `guard`); true when the write landed. */
  private async transition(
    id: string,
    to: JobStatus,
    data: JobColumns,
    guard: { status: string; startedAt: Date | null } | null = null,
  ): Promise<boolean> {
    const count = await this.sql.run(this.transitionSql(id, to, data, guard));
    const landed = count === 1;
    if (landed && (TERMINAL as JobStatus[]).includes(to)) this.notifier?.finalized(id, to as FinalStatus);
    return landed;
  }

  private transitionSql(id: string, to: JobStatus, data: JobColumns, guard: { status: string; startedAt: Date | null } | null) {
    const where = guard
      ? Prisma.sql`"id" = ${id} AND ${statusIn(fromStates(to))} AND ${columnIs("status", guard.status)} AND ${columnIs("startedAt", guard.startedAt)}`
      : Prisma.sql`"id" = ${id} AND ${statusIn(fromStates(to))}`;
    return Prisma.sql`UPDATE "Job" SET ${setList(this.kind, { ...data, status: to })} WHERE ${where}`;
  }

  /**
   * `inputPng`: a pixelize job's input image, kept on the row until the job is final (the worker reads it from here).
   * Throws DuplicateIdempotencyKey when the client already has a job under `idempotencyKey`.
   */
  async create(
    id: string,
    job: ResolvedJob,
    opts: { idempotencyKey?: string; client?: string; requestHash?: string; source: string; inputPng?: Buffer },
  ): Promise<JobRecord> {
    // The row as a read would return it (binary columns left out, as reads leave them out).
    const row: Omit<Job, "resultPng" | "inputPng"> = {
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
      device: null,
      worker: null,
      progressStep: 0,
      progressTotal: job.steps,
      attempts: 0,
      queueMs: null,
      loadMs: null,
      generateMs: null,
      postprocessMs: null,
      errorCode: null,
      errorMessage: null,
      resultWidth: null,
      resultHeight: null,
      resultSha256: null,
      pixelReport: null,
      client: opts.client ?? null,
      idempotencyKey: opts.idempotencyKey ?? null,
      requestHash: opts.requestHash ?? null,
      source: opts.source,
      createdAt: new Date(),
      startedAt: null,
      finishedAt: null,
    };
    const { pixelReport: _none, ...columns } = row;
    try {
      await this.sql.run(insertJob(this.kind, { ...columns, ...(opts.inputPng ? { inputPng: new Uint8Array(opts.inputPng) } : {}) }));
    } catch (err) {
      if (opts.idempotencyKey && isUniqueViolation(err))
        throw new DuplicateIdempotencyKey(`idempotency key ${opts.idempotencyKey} is taken`);
      throw err;
    }
    return row as unknown as JobRecord; // as find() returns it: the binary columns are never read back
  }

  /**
   * One job as Prisma's findUnique (binary columns omitted, candidates' descriptions included) returns it, read raw:
   * every watcher's final read, GET /jobs/{id}, each image read and each submit with an idempotency key (the
   * extension's all are) come here, and job-sql.ts says what Prisma's model API would cost them.
   */
  find(id: string): Promise<JobRecord | null> {
    return this.readOne(Prisma.sql`"id" = ${id}`);
  }

  /** Keys are per client: another client's job under the same key is not found. */
  findByIdempotencyKey(client: string, key: string): Promise<JobRecord | null> {
    return this.readOne(Prisma.sql`"client" = ${client} AND "idempotencyKey" = ${key}`);
  }

  private async readOne(where: Prisma.Sql): Promise<JobRecord | null> {
    const rows = await this.sql.all<Record<string, unknown>>(Prisma.sql`SELECT ${READ_COLUMNS} FROM "Job" WHERE ${where}`);
    if (!rows[0]) return null;
    const images = await this.sql.all<JobImageMeta>(
      Prisma.sql`SELECT "index", "sha256", "width", "height" FROM "JobImage" WHERE "jobId" = ${rows[0].id} ORDER BY "index" ASC`,
    );
    return jobRow(rows[0], images);
  }

  /** Jobs of one client not yet final (queued or active): what the per-client queued cap counts. */
  async countUnfinished(client: string): Promise<number> {
    const rows = await this.sql.all<{ n: number | bigint }>(
      Prisma.sql`SELECT COUNT(*) AS n FROM "Job" WHERE "client" = ${client} AND ${statusIn(["queued", "active"])}`,
    );
    return Number(rows[0]?.n ?? 0);
  }

  /** A pixelize job's input PNG; null once the job is final (or for a generation). */
  async inputImage(id: string): Promise<Buffer | null> {
    const row = await this.db.job.findUnique({ where: { id }, select: { inputPng: true } });
    return row?.inputPng ? Buffer.from(row.inputPng) : null;
  }

  /** Candidate `index` of a job (0: the row's own resultPng); null when there is none or retention removed it. */
  async image(id: string, index = 0): Promise<Buffer | null> {
    const rows = await this.sql.all<{ png: Uint8Array | null }>(
      index > 0
        ? Prisma.sql`SELECT "png" FROM "JobImage" WHERE "jobId" = ${id} AND "index" = ${index}`
        : Prisma.sql`SELECT "resultPng" AS "png" FROM "Job" WHERE "id" = ${id}`,
    );
    const png = rows[0]?.png;
    if (!png) return null;
    return Buffer.isBuffer(png) ? png : Buffer.from(png.buffer, png.byteOffset, png.byteLength);
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
      omit: { resultPng: true, inputPng: true },
      include: WITH_IMAGES,
    }) as Promise<JobRecord[]>;
  }

  /** A worker takes the job (again, after a stall); false when it is already final (cancelled while queued). */
  start(id: string, a: AttemptStart): Promise<boolean> {
    return this.transition(id, "active", {
      startedAt: new Date(),
      attempts: a.attempt,
      queueMs: a.queueMs,
      worker: a.worker,
      device: a.device,
      errorCode: null,
      errorMessage: null,
    });
  }

  async saveProgress(id: string, step: number, totalSteps: number): Promise<void> {
    await this.sql.run(
      Prisma.sql`UPDATE "Job" SET ${setList(this.kind, { progressStep: step, progressTotal: totalSteps })} WHERE "id" = ${id} AND ${statusIn(["active"])}`,
    );
  }

  /**
   * Idempotent: only a job not yet final takes the result, so a retried or duplicated write lands once. The extra
   * candidates are written in the same transaction as the status, so a watcher told "completed" finds all of them.
   */
  async complete(id: string, r: CompletedResult): Promise<boolean> {
    const data: JobColumns = {
      device: r.device,
      resultPng: new Uint8Array(r.png),
      resultSha256: r.sha256,
      resultWidth: r.width,
      resultHeight: r.height,
      loadMs: r.loadMs,
      generateMs: r.generateMs,
      postprocessMs: r.postprocessMs,
      // the column stays null without a report
      ...(r.pixelReport ? { pixelReport: r.pixelReport as unknown as Record<string, unknown> } : {}),
      inputPng: null, // a final job is never run again: its input has served
      finishedAt: new Date(),
    };
    const candidates = r.candidates ?? [];
    if (candidates.length === 0) return this.transition(id, "completed", data);
    const landed = await this.db.$transaction(async (tx) => {
      if ((await tx.$executeRaw(this.transitionSql(id, "completed", data, null))) !== 1) return false;
      await tx.jobImage.createMany({
        data: candidates.map((c) => ({
          jobId: id,
          index: c.index,
          png: new Uint8Array(c.png),
          sha256: c.sha256,
          width: c.width,
          height: c.height,
        })),
      });
      return true;
    });
    if (landed) this.notifier?.finalized(id, "completed");
    return landed;
  }

  finish(id: string, status: "failed" | "cancelled", code: string, message: string): Promise<boolean> {
    return this.transition(id, status, { errorCode: code, errorMessage: message.slice(0, 2000), inputPng: null, finishedAt: new Date() });
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
    return this.transition(id, "queued", requeued(code, message), { status: seen.status, startedAt: seen.startedAt });
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
    const where = { status: "completed", resultSha256: { not: null }, finishedAt: { lt: before } };
    // the extra candidates first: a job whose resultSha256 is cleared is no longer found by `where`
    await this.db.jobImage.updateMany({ where: { job: where, png: { not: null } }, data: { png: null } });
    const res = await this.db.job.updateMany({ where, data: { resultPng: null, resultSha256: null } });
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
    await this.db.jobImage.updateMany({ where: { jobId: { in: ids }, job: { status: "completed" } }, data: { png: null } });
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

  /** An attempt that ends without an outcome (a retry BullMQ will run, a shutdown hand-back): back to queued. */
  requeue(id: string, code: string, message: string): Promise<boolean> {
    return this.transition(id, "queued", requeued(code, message));
  }
}

/** Back in the queue: the attempt's error stays on the record (GET shows why it is waiting again). */
function requeued(code: string, message: string): JobColumns {
  return { errorCode: code, errorMessage: message.slice(0, 2000), progressStep: 0 };
}
