import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Queue } from "bullmq";
import IORedis from "ioredis";
import { freePort } from "../../src/infra/managed-redis";
import { applyMigrations } from "../../src/infra/migrate";
import { openDatabase, Db } from "../../src/infra/prisma";
import { GENERATE_QUEUE } from "../../src/jobs/job-queue";
import { waitFor } from "../support/stack";
import { CliProcess, ensureBuilt, REPO, TestRedis } from "../support/processes";

/**
 * Redis (AOF on) restarted three times under `node dist/cli.js api` and two `node dist/cli.js worker` processes.
 * Each round: the workers are frozen (SIGSTOP: no worker runs, yet the same processes must carry on afterwards), jobs
 * are queued, Redis goes down — the API must keep answering within a bound (503 ENGINE_UNAVAILABLE for submits, job
 * reads and health from the database) — and comes back on the same port from its AOF with every queued job. Then the
 * workers are thawed: their sockets died with the old Redis, and they must reconnect (BullMQ, or the watchdog
 * recreating the worker) and finish everything without being restarted.
 */
const ROUNDS = 3;
const JOBS_PER_ROUND = 3;
const WORKERS = 2;
/** An answer slower than this while Redis is away counts as a hang. */
const OUTAGE_BOUND_MS = 3_000;

jest.setTimeout(180_000);

let tmp: string;
let redis: TestRedis;
let db: Db;
let queue: Queue;
let queueConnection: IORedis;
let api: CliProcess;
const workers: CliProcess[] = [];
let base: string;

beforeAll(async () => {
  ensureBuilt();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-redis-restart-"));
  redis = await TestRedis.start(path.join(tmp, "redis"), true);
  const databaseUrl = `file:${path.join(tmp, "restart.db")}`;
  await applyMigrations(REPO, databaseUrl);
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const env = {
    REDIS_URL: redis.url,
    DATABASE_URL: databaseUrl,
    PIXELAI_QUEUE_PREFIX: `restart${process.pid}`,
    PIXELAI_DATA_DIR: tmp,
    PIXELAI_ENGINES: "torch",
    PIXELAI_RATE_LIMIT_PER_MIN: "0",
    // a worker idle while jobs wait, with Redis back, is replaced after 2 s instead of 15 s
    PIXELAI_WORKER_WATCHDOG_MS: "2000",
  };
  api = new CliProcess(["api"], { ...env, HOST: "127.0.0.1", PORT: String(port) }, path.join(tmp, "api.log"));
  for (let i = 0; i < WORKERS; i++) workers.push(new CliProcess(["worker", "--engine", "torch"], env, path.join(tmp, `worker-${i}.log`)));
  await Promise.all([api.waitForLog("API listening"), ...workers.map((w) => w.waitForLog("generation worker started"))]);
  db = await openDatabase(databaseUrl);
  queueConnection = new IORedis(redis.url, { maxRetriesPerRequest: null });
  queue = new Queue(GENERATE_QUEUE, { connection: queueConnection, prefix: env.PIXELAI_QUEUE_PREFIX });
});

afterAll(async () => {
  for (const w of workers) if (w.alive) process.kill(w.pid, "SIGCONT");
  await Promise.all([api, ...workers].filter(Boolean).map((p) => p.stop("SIGTERM", 20_000)));
  await queue?.close();
  queueConnection?.disconnect();
  await db?.$disconnect();
  await redis?.down();
  // KEEP_TMP=1 keeps the process logs and the Redis/SQLite files for a look after a failure
  if (tmp && process.env.KEEP_TMP === "1") console.log(`[reliability] kept ${tmp}`);
  else if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** One HTTP call with its duration; a call that does not answer within the bound is aborted and reported as such. */
async function timed(method: string, url: string, body?: unknown): Promise<{ status: number; body: any; ms: number }> {
  const t0 = Date.now();
  const res = await fetch(`${base}${url}`, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(OUTAGE_BOUND_MS * 3),
  });
  return { status: res.status, body: await res.json(), ms: Date.now() - t0 };
}

async function submit(i: number): Promise<string> {
  const res = await timed("POST", "/jobs", { prompt: `restart ${i}`, width: 64, height: 64, steps: 2, seed: i });
  expect(res.status).toBe(202);
  return res.body.id as string;
}

const signalWorkers = (signal: NodeJS.Signals) => workers.forEach((w) => process.kill(w.pid, signal));

it(`queued jobs survive ${ROUNDS} Redis restarts (AOF), the API degrades without hanging, and the same workers finish everything`, async () => {
  const pids = workers.map((w) => w.pid);
  const accepted: string[] = [await submit(0)];
  await waitFor(async () => (await db.job.findUnique({ where: { id: accepted[0] } }))?.status === "completed", 60_000, 100);
  const rounds: Array<Record<string, number>> = [];

  for (let round = 1; round <= ROUNDS; round++) {
    signalWorkers("SIGSTOP");
    const queued: string[] = [];
    for (let i = 0; i < JOBS_PER_ROUND; i++) queued.push(await submit(round * 100 + i));
    accepted.push(...queued);

    await redis.down();
    const t0 = Date.now();
    let slowest = 0;
    // at once (connections just dropped) and again while every client is in its reconnect back-off
    for (const wait of [0, 1_500]) {
      await new Promise((r) => setTimeout(r, wait));
      const refused = await timed("POST", "/jobs", { prompt: "while redis is away", width: 64, height: 64, steps: 1 });
      const job = await timed("GET", `/jobs/${queued[0]}`);
      const list = await timed("GET", "/jobs?limit=5");
      const health = await timed("GET", "/health");
      const progress = await timed("GET", `/progress/${queued[1]}`);
      expect(refused.status).toBe(503);
      expect(refused.body.error.code).toBe("ENGINE_UNAVAILABLE");
      expect(job.status).toBe(200);
      expect(job.body.status).toBe("queued");
      expect(list.status).toBe(200);
      expect(list.body.items.length).toBeGreaterThan(0);
      expect(health.status).toBe(200);
      expect(health.body).toMatchObject({ status: "degraded", redis: false });
      expect(progress.status).toBe(200);
      slowest = Math.max(slowest, refused.ms, job.ms, list.ms, health.ms, progress.ms);
    }
    expect(slowest).toBeLessThan(OUTAGE_BOUND_MS);
    const outageMs = Date.now() - t0;

    await redis.up();
    // the AOF brought back every job still waiting, this round's and any earlier one not yet run
    for (const id of accepted) {
      const row = await db.job.findUniqueOrThrow({ where: { id } });
      if (row.status === "completed") continue;
      expect(row.status).toBe("queued");
      const state = await (await queue.getJob(id))?.getState();
      expect(["waiting", "prioritized"]).toContain(state);
    }
    await waitFor(async () => (await timed("GET", "/health")).body.status === "healthy", 15_000, 100);

    const thawed = Date.now();
    signalWorkers("SIGCONT");
    await waitFor(
      async () => (await db.job.count({ where: { id: { in: accepted }, status: "completed" } })) === accepted.length,
      90_000,
      200,
    );
    rounds.push({ round, slowestAnswerMs: slowest, outageMs, drainMs: Date.now() - thawed });
  }

  const recreations = workers.map((w) => w.output().split("generation worker looks stuck").length - 1);
  console.log(`[reliability] redis restarts: ${JSON.stringify({ rounds, jobs: accepted.length, watchdogRecreations: recreations })}`);

  // the same worker processes, never restarted, did the work
  expect(workers.map((w) => w.alive && w.pid)).toEqual(pids);
  const rows = await db.job.findMany({ where: { id: { in: accepted } } });
  expect(rows).toHaveLength(accepted.length);
  expect(rows.every((r) => r.status === "completed" && r.attempts === 1)).toBe(true);
  // the only other rows are the submissions refused with 503 during the outages: failed, and the client was told
  const others = await db.job.findMany({ where: { id: { notIn: accepted } } });
  expect(others).toHaveLength(ROUNDS * 2);
  expect(others.every((r) => r.status === "failed" && r.errorCode === "ENGINE_UNAVAILABLE")).toBe(true);
  // the database row is written before BullMQ records the completion: give the last ones a moment
  const states = await waitFor(
    async () => {
      const all = await Promise.all(accepted.map(async (id) => (await queue.getJob(id))?.getState()));
      return all.every((st) => st === "completed") ? all : undefined;
    },
    10_000,
    100,
  ).catch(async () => Promise.all(accepted.map(async (id) => (await queue.getJob(id))?.getState())));
  expect(states).toEqual(accepted.map(() => "completed"));
});
