import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { isDeepStrictEqual } from "node:util";
import { applyMigrations } from "../../src/infra/migrate";
import { closeDatabase, Db, openDatabase, sqlExecutorOf } from "../../src/infra/prisma";
import { SqliteSqlExecutor } from "../../src/infra/sql-executor";
import { DuplicateIdempotencyKey, JobsRepository } from "../../src/jobs/jobs.repository";
import type { ResolvedJob } from "../../src/jobs/jobs.dto";
import { ModelsRepository } from "../../src/models/models.repository";
import { startTestPostgres, TestPostgres } from "../support/postgres";
import { REPO } from "../support/processes";

/**
 * The job writes every job makes run as raw statements (src/jobs/job-sql.ts; on SQLite through prepared statements on
 * a connection of their own, src/infra/sql-executor.ts). Rows written that way must read back through Prisma exactly
 * as Prisma's own writes did, on both databases, and the state machine's conditions must hold in SQL.
 */
const JOB = {
  prompt: "a knight",
  negativePrompt: null,
  model: "tiny-sd",
  engine: "torch",
  width: 64,
  height: 64,
  steps: 4,
  guidanceScale: 7,
  seed: 7,
  scheduler: "euler",
  lora: null,
  removeBackground: false,
  pixel: null,
  priority: null,
  initNoise: null,
  previewEvery: null,
} as unknown as ResolvedJob;

let tmp: string;
let pg: TestPostgres;
const open: Record<string, Db> = {};

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-job-store-"));
  pg = await startTestPostgres();
  const urls = { sqlite: `file:${path.join(tmp, "store.db")}`, postgresql: pg.url };
  for (const [kind, url] of Object.entries(urls)) {
    await applyMigrations(REPO, url);
    open[kind] = await openDatabase(url);
  }
}, 120_000);

afterAll(async () => {
  for (const db of Object.values(open)) await closeDatabase(db);
  await pg?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe.each(["sqlite", "postgresql"])("job rows written by raw statements, on %s", (kind) => {
  const db = () => open[kind];
  const repo = () => new JobsRepository(db());

  it("creates a row that reads back as the record create returned, and refuses a second job under one key", async () => {
    const record = await repo().create(`${kind}-a`, JOB, { source: "ws", client: "c1", idempotencyKey: "k1", requestHash: "h1" });
    const { images, ...found } = (await repo().find(`${kind}-a`))!;
    expect(images).toEqual([]);
    expect(isDeepStrictEqual(found, record)).toBe(true);
    expect(found).toMatchObject({ status: "queued", progressStep: 0, progressTotal: 4, attempts: 0, source: "ws", client: "c1" });
    await expect(repo().create(`${kind}-b`, JOB, { source: "rest", client: "c1", idempotencyKey: "k1" })).rejects.toBeInstanceOf(
      DuplicateIdempotencyKey,
    );
    // the same key from another client is another job
    await repo().create(`${kind}-c`, JOB, { source: "rest", client: "c2", idempotencyKey: "k1" });
    expect(await repo().countUnfinished("c1")).toBe(1);
  });

  it("moves a row through the state machine; a final row takes no further write", async () => {
    const input = Buffer.from([1, 2, 3, 4]);
    await repo().create(`${kind}-run`, JOB, { source: "rest", client: "c3", inputPng: input });
    expect(await repo().inputImage(`${kind}-run`)).toEqual(input);
    expect(await repo().start(`${kind}-run`, { attempt: 1, queueMs: 12, worker: "host:1", device: "cpu" })).toBe(true);
    await repo().saveProgress(`${kind}-run`, 3, 4);
    const png = Buffer.from("not really a png, but bytes");
    const report = { grid: { width: 32, height: 32 }, colors: 8, palette: ["#102030"] };
    const result = { device: "cpu", png, sha256: "abc", width: 32, height: 32, loadMs: 1, generateMs: 2, postprocessMs: 3 };
    expect(await repo().complete(`${kind}-run`, { ...result, pixelReport: report as never })).toBe(true);
    expect(await repo().complete(`${kind}-run`, result)).toBe(false);
    expect(await repo().finish(`${kind}-run`, "failed", "ENGINE_INTERNAL", "late")).toBe(false);
    const row = await db().job.findUnique({ where: { id: `${kind}-run` } });
    expect(row).toMatchObject({ status: "completed", attempts: 1, queueMs: 12, worker: "host:1", progressStep: 3, resultSha256: "abc" });
    expect(row!.pixelReport).toEqual(report);
    expect(Buffer.from(row!.resultPng!)).toEqual(png);
    expect(row!.inputPng).toBeNull();
    expect(row!.startedAt).toBeInstanceOf(Date);
    expect(row!.finishedAt!.getTime()).toBeGreaterThanOrEqual(row!.startedAt!.getTime());
    expect(await repo().countUnfinished("c3")).toBe(0);
  });

  it("reads a job back raw exactly as Prisma's findUnique does, candidates and images included", async () => {
    const id = `${kind}-read`;
    await repo().create(id, JOB, { source: "ws", client: "c4", idempotencyKey: "k-read", requestHash: "h" });
    await repo().start(id, { attempt: 1, queueMs: 5, worker: "host:2", device: "cpu" });
    const png = (text: string) => Buffer.from(text);
    const report = { grid: { mode: "auto", pitch: [2, 2] }, colors: 8, palette: ["#102030", "#ffeedd"] };
    const candidates = [2, 1].map((index) => ({ index, png: png(`candidate ${index}`), sha256: `s${index}`, width: 16, height: 8 }));
    const result = { device: "cpu", png: png("image 0"), sha256: "s0", width: 32, height: 32, loadMs: 0, generateMs: 9, postprocessMs: 1 };
    expect(await repo().complete(id, { ...result, pixelReport: report as never, candidates })).toBe(true);
    const expected = await db().job.findUnique({
      where: { id },
      omit: { resultPng: true, inputPng: true },
      include: { images: { select: { index: true, sha256: true, width: true, height: true }, orderBy: { index: "asc" } } },
    });
    const found = await repo().find(id);
    expect(found).toEqual(expected);
    expect(found!.images!.map((i) => i.index)).toEqual([1, 2]);
    expect(found!.finishedAt).toBeInstanceOf(Date);
    expect(await repo().image(id)).toEqual(png("image 0"));
    expect(await repo().image(id, 2)).toEqual(png("candidate 2"));
    expect(await repo().image(id, 3)).toBeNull();
    expect(await repo().image("no-such-job")).toBeNull();
    expect(await repo().find("no-such-job")).toBeNull();
    expect(await repo().findByIdempotencyKey("c4", "k-read")).toEqual(expected);
    expect(await repo().findByIdempotencyKey("another client", "k-read")).toBeNull();
  });

  it("requeues only the attempt that was looked at (status and startedAt, a null startedAt included)", async () => {
    await repo().create(`${kind}-rq`, JOB, { source: "rest" });
    await repo().start(`${kind}-rq`, { attempt: 1, queueMs: 1, worker: null, device: null });
    const seen = (await repo().find(`${kind}-rq`))!;
    const requeue = (startedAt: Date | null) => repo().requeueIfUnchanged(`${kind}-rq`, { status: "active", startedAt }, "STALLED", "y");
    expect(await requeue(null)).toBe(false);
    expect(await requeue(new Date(0))).toBe(false);
    expect(await requeue(seen.startedAt)).toBe(true);
    expect(await repo().find(`${kind}-rq`)).toMatchObject({ status: "queued", errorCode: "STALLED", errorMessage: "y", progressStep: 0 });
  });

  it("looks a model up as Prisma's findUnique returns it (dates, the BigInt size)", async () => {
    const models = new ModelsRepository(db());
    await models.upsert({
      name: `m-${kind}`,
      source: "tiny-sd",
      kind: "base",
      architecture: "sd",
      sizeBytes: 2n ** 40n,
      crossAttentionDim: 32,
    });
    const expected = await db().model.findUnique({ where: { name: `m-${kind}` } });
    expect(isDeepStrictEqual(await models.findByName(`m-${kind}`), expected)).toBe(true);
    expect(await models.findByName("no-such-model")).toBeNull();
  });
});

describe("the SQLite statements' own connection", () => {
  it("is a prepared-statement connection on SQLite", () => {
    expect(sqlExecutorOf(open.sqlite)).toBeInstanceOf(SqliteSqlExecutor);
  });

  it("waits out a Prisma transaction holding the write lock without blocking the event loop", async () => {
    const repo = new JobsRepository(open.sqlite);
    await repo.create("lock-a", JOB, { source: "rest" });
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    // an interactive transaction that has written (so holds the lock) and waits on the event loop before committing
    const transaction = open.sqlite.$transaction(async (tx) => {
      await tx.job.updateMany({ where: { id: "lock-a" }, data: { prompt: "held" } });
      await held;
    });
    await new Promise((r) => setTimeout(r, 50));
    let releasedAt = Number.POSITIVE_INFINITY;
    setTimeout(() => {
      releasedAt = performance.now();
      release();
    }, 100);
    expect(await repo.start("lock-a", { attempt: 1, queueMs: 0, worker: null, device: null })).toBe(true);
    expect(performance.now()).toBeGreaterThanOrEqual(releasedAt); // it did wait for the lock
    await transaction;
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(10); // timers kept firing while the write waited
    expect(await repo.find("lock-a")).toMatchObject({ status: "active", prompt: "held" });
  });
});
