import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import request from "supertest";
import { applyMigrations } from "../../src/infra/migrate";
import { openDatabase, Db } from "../../src/infra/prisma";
import { startTestStack, TestStack, waitFor } from "../support/stack";
import { childrenOf, CliProcess, ensureBuilt, isAlive, REPO, sleep, TestRedis } from "../support/processes";

/**
 * Worker processes (`node dist/cli.js worker`) SIGKILLed mid-job, repeatedly: BullMQ's stalled-job recovery hands each
 * lost job to another worker, the idempotent result write lands once, and nothing is lost or left active.
 * CI: 2 workers, ≥ 40 jobs, 4 kills. `make chaos` (CHAOS_FULL=1): 3 workers, ≥ 200 jobs, 20 kills.
 */
const FULL = process.env.CHAOS_FULL === "1";
const WORKERS = FULL ? 3 : 2;
const JOBS = FULL ? 200 : 40;
const KILLS = FULL ? 20 : 4;
const KILL_EVERY_MS = FULL ? 2_500 : 2_000;

jest.setTimeout(FULL ? 900_000 : 240_000);

let tmp: string;
let redis: TestRedis;
let stack: TestStack;
let db: Db;
const workers: CliProcess[] = [];
let workerEnv: Record<string, string>;
let spawned = 0;

function spawnWorker(): CliProcess {
  const w = new CliProcess(["worker", "--engine", "torch"], workerEnv, path.join(tmp, `worker-${spawned++}.log`));
  workers.push(w);
  return w;
}

beforeAll(async () => {
  ensureBuilt();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-chaos-"));
  redis = await TestRedis.start(path.join(tmp, "redis"), false);
  const databaseUrl = `file:${path.join(tmp, "chaos.db")}`;
  await applyMigrations(REPO, databaseUrl); // once, so worker start-ups do not race on it
  const prefix = `chaos${process.pid}`;
  workerEnv = {
    REDIS_URL: redis.url,
    DATABASE_URL: databaseUrl,
    PIXELAI_QUEUE_PREFIX: prefix,
    PIXELAI_DATA_DIR: tmp,
    // short locks so a killed worker's job is noticed in ~2 s, not 30 s
    PIXELAI_LOCK_DURATION_MS: "2000",
    PIXELAI_STALLED_INTERVAL_MS: "1000",
    PIXELAI_MAX_STALLED_COUNT: "20",
    PIXELAI_WORKER_WATCHDOG_MS: "5000",
  };
  // CHAOS_FULL queues 200 jobs at once from one client: past the default per-client cap (100), which is not under test
  stack = await startTestStack(
    {
      REDIS_URL: redis.url,
      DATABASE_URL: databaseUrl,
      PIXELAI_QUEUE_PREFIX: prefix,
      PIXELAI_RATE_LIMIT_PER_MIN: "0",
      PIXELAI_MAX_QUEUED_PER_CLIENT: "0",
    },
    { api: true, worker: false },
  );
  db = await openDatabase(databaseUrl);
  // one at a time: concurrent `prisma migrate deploy` runs on one SQLite file can fail with a busy database
  for (let i = 0; i < WORKERS; i++) await spawnWorker().waitForLog("generation worker started");
});

afterAll(async () => {
  await Promise.all(workers.map((w) => w.stop("SIGTERM", 20_000)));
  await db?.$disconnect();
  await stack?.close();
  await redis?.down();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

async function submit(i: number): Promise<string> {
  const res = await request(stack.url)
    .post("/jobs")
    .send({ prompt: `chaos ${i}`, width: 64, height: 64, steps: 6, seed: i });
  expect(res.status).toBe(202);
  return res.body.id as string;
}

async function counts(): Promise<Record<string, number>> {
  const rows = await db.job.groupBy({ by: ["status"], _count: { _all: true } });
  return Object.fromEntries(rows.map((r) => [r.status, r._count._all]));
}

it(`every job completes exactly once through ${KILLS} worker SIGKILLs`, async () => {
  const started = Date.now();
  const completions = new Map<string, number>();
  const events = stack.service.queue.events();
  events.on("completed", ({ jobId }) => completions.set(jobId, (completions.get(jobId) ?? 0) + 1));
  await events.waitUntilReady();

  const ids: string[] = [];
  for (let i = 0; i < JOBS; i++) ids.push(await submit(i));

  const orphans: number[] = [];
  const warmSince = new Map<CliProcess, number>();
  let kills = 0;
  let hitActive = 0;
  while (kills < KILLS) {
    const c = await counts();
    // keep work in the queue until every kill is done, so each kill can land on a running job
    if ((c.queued ?? 0) + (c.active ?? 0) < WORKERS * 3) for (let i = 0; i < 10; i++) ids.push(await submit(ids.length));
    const now = Date.now();
    for (const w of workers) if (w.alive && !warmSince.has(w) && w.output().includes("generation worker started")) warmSince.set(w, now);
    const busy = (c.active ?? 0) > 0;
    const candidates = workers.filter((w) => w.alive && now - (warmSince.get(w) ?? now) >= 1_500);
    if (!busy || candidates.length === 0) {
      await sleep(200);
      continue;
    }
    const victim = candidates[Math.floor(Math.random() * candidates.length)];
    orphans.push(...childrenOf(victim.pid));
    const activeBefore = c.active ?? 0;
    victim.child.kill("SIGKILL");
    await victim.exited;
    kills++;
    if (activeBefore > 0) hitActive++;
    spawnWorker();
    await sleep(KILL_EVERY_MS);
  }

  const final = await waitFor(
    async () => {
      const c = await counts();
      return (c.queued ?? 0) + (c.active ?? 0) === 0 ? c : undefined;
    },
    FULL ? 600_000 : 150_000,
    500,
  );
  await sleep(500); // let the last QueueEvents arrive
  await events.close();

  const stalled = (await Promise.all(ids.map((id) => stack.service.queue.queue.getJob(id)))).filter(
    (j) => (j?.stalledCounter ?? 0) > 0,
  ).length;
  const duplicates = [...completions.values()].filter((n) => n > 1).length;
  const missingCompletion = ids.filter((id) => !completions.has(id)).length;
  const rows = await db.job.findMany({ select: { id: true, status: true, resultSha256: true } });
  const summary = {
    jobs: ids.length,
    workers: WORKERS,
    kills,
    killsWithJobsActive: hitActive,
    jobsThatStalled: stalled,
    completed: final.completed ?? 0,
    failed: final.failed ?? 0,
    lost: ids.length - rows.filter((r) => r.status === "completed").length,
    duplicates,
    seconds: Math.round((Date.now() - started) / 1000),
  };
  console.log(`[reliability] worker SIGKILL: ${JSON.stringify(summary)}`);

  expect(kills).toBe(KILLS);
  expect(rows).toHaveLength(ids.length);
  expect(rows.every((r) => r.status === "completed" && r.resultSha256)).toBe(true);
  expect(final).toEqual({ completed: ids.length });
  expect(duplicates).toBe(0);
  expect(missingCompletion).toBe(0);
  expect(await stack.service.queue.queue.getFailedCount()).toBe(0);
  expect(await stack.service.queue.queue.getActiveCount()).toBe(0);
  expect(stalled).toBeGreaterThan(0); // the kills did land on running jobs
  // a runner whose worker was killed sees its stdin close and exits by itself
  await waitFor(async () => orphans.every((pid) => !isAlive(pid)), 30_000, 250);
});
