import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Queue } from "bullmq";
import IORedis from "ioredis";
import { freePort } from "../../src/infra/managed-redis";
import { openDatabase, Db } from "../../src/infra/prisma";
import { GENERATE_QUEUE } from "../../src/jobs/job-queue";
import { waitFor } from "../support/stack";
import { childrenOf, CliProcess, ensureBuilt, isAlive, TestRedis } from "../support/processes";

/**
 * SIGTERM to `node dist/cli.js start` (API + worker + runner in one process) with a job running. The queue is an
 * outside redis-server (REDIS_URL), so what the process hands back outlives it. Two runs of the process:
 * 1. a tiny grace: the long active job is cancelled on the runner and handed back (no attempt spent), the jobs behind it
 *    stay queued; the process exits 0 and leaves no runner behind.
 * 2. the default grace: the handed-back job and the queued ones complete (attempt 1 still); then a short job active at
 *    SIGTERM finishes inside the grace while the API already refuses connections.
 */
jest.setTimeout(150_000);

let tmp: string;
let redis: TestRedis;
let db: Db;
let queue: Queue;
let queueConnection: IORedis;
let env: Record<string, string>;
let port: number;
const prefix = `shutdown${process.pid}`;
const processes: CliProcess[] = [];

beforeAll(async () => {
  ensureBuilt();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-shutdown-"));
  redis = await TestRedis.start(path.join(tmp, "redis"), false);
  port = await freePort();
  const databaseUrl = `file:${path.join(tmp, "shutdown.db")}`;
  env = {
    REDIS_URL: redis.url,
    DATABASE_URL: databaseUrl,
    PIXELAI_QUEUE_PREFIX: prefix,
    PIXELAI_DATA_DIR: tmp,
    PIXELAI_ENGINES: "torch",
    HOST: "127.0.0.1",
    PORT: String(port),
    PIXELAI_RATE_LIMIT_PER_MIN: "0",
    PIXELAI_CANCEL_GRACE_MS: "5000",
  };
  queueConnection = new IORedis(redis.url, { maxRetriesPerRequest: null });
  queue = new Queue(GENERATE_QUEUE, { connection: queueConnection, prefix });
});

afterAll(async () => {
  await Promise.all(processes.map((p) => p.stop("SIGKILL", 5_000)));
  await queue?.close();
  queueConnection?.disconnect();
  await db?.$disconnect();
  await redis?.down();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const url = () => `http://127.0.0.1:${port}`;

async function startServer(extra: Record<string, string>): Promise<CliProcess> {
  const p = new CliProcess(["start"], { ...env, ...extra }, path.join(tmp, `start-${processes.length}.log`));
  processes.push(p);
  await p.waitForLog("API listening");
  db ??= await openDatabase(env.DATABASE_URL); // after the first start: it applied the migrations
  return p;
}

async function submit(body: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${url()}/jobs`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  expect(res.status).toBe(202);
  return ((await res.json()) as { id: string }).id;
}

/** Running on the runner, past its first step (not merely marked active). */
async function running(id: string): Promise<void> {
  await waitFor(
    async () => {
      const row = await db.job.findUnique({ where: { id } });
      return row?.status === "active" && row.progressStep >= 1;
    },
    60_000,
    50,
  );
}

/** True once nothing accepts connections on the API port. */
async function refused(): Promise<boolean> {
  try {
    await fetch(`${url()}/health`, { signal: AbortSignal.timeout(1_000) });
    return false;
  } catch {
    return true;
  }
}

/** The runner(s) of a `start` process: python children, recorded by pid before the signal. */
function runnerPids(p: CliProcess): number[] {
  const pids = childrenOf(p.pid).filter((pid) => {
    try {
      return /python/i.test(fs.readFileSync(`/proc/${pid}/cmdline`, "utf8"));
    } catch {
      return false;
    }
  });
  expect(pids.length).toBeGreaterThan(0);
  return pids;
}

let longJob: string;
let queuedBehind: string[];

it("with a tiny grace, hands the active job back (no attempt spent), keeps the queued ones, exits 0 with no runner left", async () => {
  const p1 = await startServer({ PIXELAI_SHUTDOWN_GRACE_MS: "300" });
  // long enough (tens of seconds here) that only a hand-back can end it within the test's bounds
  longJob = await submit({ prompt: "long", width: 256, height: 256, steps: 150, seed: 1 });
  queuedBehind = [
    await submit({ prompt: "behind 1", width: 64, height: 64, steps: 2, seed: 2 }),
    await submit({ prompt: "behind 2", width: 64, height: 64, steps: 2, seed: 3 }),
  ];
  await running(longJob);
  const runners = runnerPids(p1);

  const t0 = Date.now();
  p1.child.kill("SIGTERM");
  const { code } = await p1.exited;
  const seconds = (Date.now() - t0) / 1000;
  expect(code).toBe(0);
  // grace 300 ms + a cancel honoured at the next step + runner shutdown; far less than the job's own length
  expect(seconds).toBeLessThan(15);
  expect(p1.output()).toContain("job handed back to the queue at shutdown");
  await waitFor(async () => runners.every((pid) => !isAlive(pid)), 5_000, 50);

  const row = await db.job.findUniqueOrThrow({ where: { id: longJob } });
  expect(row.status).toBe("queued");
  const job = await queue.getJob(longJob);
  expect(job?.attemptsMade).toBe(0);
  expect(["waiting", "delayed", "prioritized"]).toContain(await job!.getState());
  for (const id of queuedBehind) expect((await db.job.findUniqueOrThrow({ where: { id } })).status).toBe("queued");
  console.log(
    `[reliability] shutdown hand-back: ${JSON.stringify({ exitCode: code, seconds, runnersLeft: runners.filter(isAlive).length })}`,
  );
});

it("after a restart the handed-back job completes on its first attempt; a short job active at SIGTERM finishes within the grace", async () => {
  const p2 = await startServer({ PIXELAI_SHUTDOWN_GRACE_MS: "60000", PIXELAI_JOB_TIMEOUT_MS: "120000" });
  for (const id of [longJob, ...queuedBehind]) {
    const row = await waitFor(
      async () => {
        const r = await db.job.findUnique({ where: { id } });
        return r && ["completed", "failed", "cancelled"].includes(r.status) ? r : undefined;
      },
      120_000,
      250,
    );
    expect(row.status).toBe("completed");
    expect(row.attempts).toBe(1);
  }

  // a few seconds of work, so the API can be seen closed while the job still runs
  const short = await submit({ prompt: "short", width: 128, height: 128, steps: 40, seed: 4 });
  await running(short);
  const runners = runnerPids(p2);
  const t0 = Date.now();
  p2.child.kill("SIGTERM");
  await waitFor(refused, 3_000, 20);
  const apiClosedWhileWorking = p2.alive && (await db.job.findUniqueOrThrow({ where: { id: short } })).status === "active";
  const { code } = await p2.exited;
  expect(code).toBe(0);
  expect(apiClosedWhileWorking).toBe(true);
  await waitFor(async () => runners.every((pid) => !isAlive(pid)), 5_000, 50);
  const row = await db.job.findUniqueOrThrow({ where: { id: short } });
  expect(row.status).toBe("completed");
  expect(row.attempts).toBe(1);
  expect(row.finishedAt!.getTime()).toBeGreaterThanOrEqual(t0);
  expect(p2.output()).not.toContain("handed back");
  expect(await db.job.count({ where: { status: { not: "completed" } } })).toBe(0);
  console.log(
    `[reliability] shutdown finish-in-grace: ${JSON.stringify({ exitCode: code, seconds: (Date.now() - t0) / 1000, jobs: await db.job.count() })}`,
  );
});
