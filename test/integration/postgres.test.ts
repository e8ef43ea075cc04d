import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import request from "supertest";
import { startTestStack, TestStack, decodePng, opaqueColours } from "../support/stack";
import { fetchPng, finishedJob, submitJob } from "../support/jobs-client";
import { startTestPostgres, TestPostgres } from "../support/postgres";
import { REPO } from "../support/processes";

/**
 * The core behaviours on PostgreSQL (DATABASE_URL=postgresql://…, the many-machines database): the real stack with its
 * migrations applied to a throwaway cluster, the tiny models, and the same HTTP API the SQLite suites use.
 */
let pg: TestPostgres;
let stack: TestStack;

beforeAll(async () => {
  pg = await startTestPostgres();
  stack = await startTestStack({ DATABASE_URL: pg.url, PIXELAI_ENGINES: "torch" });
});

afterAll(async () => {
  await stack?.close();
  await pg?.stop();
});

const knight = { prompt: "a knight", width: 64, height: 64, steps: 4, seed: 7, pixel: { width: 32, height: 32, colors: 8 } };

const submit = (body: Record<string, unknown>) => submitJob(stack.url, body);
const finished = (id: string) => finishedJob(stack.url, id);
const imageOf = (id: string) => fetchPng(stack.url, id);

describe("the stack on PostgreSQL", () => {
  it("really runs on PostgreSQL with the PostgreSQL migrations applied", async () => {
    expect(stack.config.databaseUrl).toBe(pg.url);
    const rows = await stack.service.db.$queryRawUnsafe<Array<{ migration_name: string }>>(
      `SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL ORDER BY migration_name`,
    );
    // every PostgreSQL migration folder, and nothing else (the SQLite ones have their own folder)
    const folders = fs
      .readdirSync(path.join(REPO, "prisma", "postgres", "migrations"), { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name)
      .sort();
    expect(folders[0]).toBe("20261125000000_init");
    expect(rows.map((r) => r.migration_name)).toEqual(folders);
    const version = await stack.service.db.$queryRawUnsafe<Array<{ v: string }>>(`SELECT version() AS v`);
    expect(version[0].v).toMatch(/^PostgreSQL /);
  });

  it("submits a job, runs it to completed, records the worker and serves a 32×32 PNG (bytea round trip)", async () => {
    const id = await submit(knight);
    const job = await finished(id);
    expect(job).toMatchObject({ status: "completed", engine: "torch", model: "tiny-sd", seed: 7, device: "cpu" });
    expect(job.worker).toBe(`${os.hostname()}:${process.pid}`);
    // the pixel report is a JSON column: it must come back from PostgreSQL as it went in
    expect(job.result).toEqual({
      width: 32,
      height: 32,
      imageUrl: `/jobs/${id}/image`,
      images: [
        { index: 0, seed: 7, width: 32, height: 32, sha256: expect.stringMatching(/^[0-9a-f]{64}$/), imageUrl: `/jobs/${id}/images/0` },
      ],
      pixel: { grid: expect.objectContaining({ mode: "auto" }) },
    });
    for (const key of ["queueMs", "loadMs", "generateMs", "postprocessMs"]) expect(typeof job.timings[key]).toBe("number");
    const png = decodePng(await imageOf(id));
    expect([png.width, png.height]).toEqual([32, 32]);
    expect(opaqueColours(png)).toBeGreaterThan(1);
    // Same seed, same bytes: the stored image is exactly what the runner produced.
    const again = await submit(knight);
    expect((await finished(again)).status).toBe("completed");
    expect((await imageOf(again)).equals(await imageOf(id))).toBe(true);
  });

  it("stores every candidate of a count 3 job (JobImage bytea rows, one transaction with the status) and deletes them with it", async () => {
    const id = await submit({ ...knight, count: 3, seed: 20 });
    const job = await finished(id);
    expect(job.result.images.map((i: { index: number; seed: number }) => [i.index, i.seed])).toEqual([
      [0, 20],
      [1, 21],
      [2, 22],
    ]);
    const second = await request(stack.url).get(`/jobs/${id}/images/2`).buffer(true);
    expect([second.status, second.headers["content-type"]]).toEqual([200, "image/png"]);
    expect((await request(stack.url).get(`/jobs/${id}/images/3`)).status).toBe(404);
    expect(await stack.service.db.jobImage.count({ where: { jobId: id } })).toBe(2);
    expect((await request(stack.url).delete(`/jobs/${id}`)).status).toBe(204);
    expect(await stack.service.db.jobImage.count({ where: { jobId: id } })).toBe(0);
  });

  it("lists history newest first with cursor pages and filters", async () => {
    const ids = [await submit({ ...knight, seed: 1 }), await submit({ ...knight, seed: 2 }), await submit({ ...knight, seed: 3 })];
    for (const id of ids) expect((await finished(id)).status).toBe("completed");
    const first = await request(stack.url).get("/jobs").query({ limit: 2 });
    expect(first.status).toBe(200);
    expect(first.body.items.map((j: { id: string }) => j.id)).toEqual([ids[2], ids[1]]);
    const next = await request(stack.url).get("/jobs").query({ limit: 2, cursor: first.body.nextCursor });
    expect(next.body.items[0].id).toBe(ids[0]);
    const completed = await request(stack.url).get("/jobs").query({ status: "completed", limit: 100 });
    expect(completed.body.items.length).toBeGreaterThanOrEqual(5);
    expect(completed.body.items.every((j: { status: string }) => j.status === "completed")).toBe(true);
    const none = await request(stack.url).get("/jobs").query({ status: "failed" });
    expect(none.body.items).toEqual([]);
  });

  it("answers concurrent submits with one idempotency key with one job (unique violation on PostgreSQL)", async () => {
    const body = { ...knight, seed: 11, idempotencyKey: `pg-idem-${Date.now()}` };
    const replies = await Promise.all([1, 2, 3, 4].map(() => request(stack.url).post("/jobs").send(body)));
    const ids = new Set(replies.map((r) => r.body.id as string));
    expect(replies.map((r) => r.status).every((s) => s === 200 || s === 202)).toBe(true);
    expect(ids.size).toBe(1);
    expect((await finished([...ids][0])).status).toBe("completed");
  });

  it("keeps the model registry (BigInt sizes) in PostgreSQL", async () => {
    const res = await request(stack.url).get("/models");
    expect(res.status).toBe(200);
    expect(res.body.models).toEqual(expect.arrayContaining(["tiny-sd", "tiny-sdxl"]));
    const detail = await request(stack.url).get("/models/tiny-sd");
    expect(detail.status).toBe(200);
    expect(detail.body).toMatchObject({ name: "tiny-sd", kind: "base", architecture: "sd" });
    expect(detail.body.sizeBytes).toBeGreaterThan(0);
    const row = await stack.service.db.model.findUnique({ where: { name: "tiny-sd" } });
    expect(typeof row?.sizeBytes).toBe("bigint");
    expect(Number(row?.sizeBytes)).toBe(detail.body.sizeBytes);
  });
});
