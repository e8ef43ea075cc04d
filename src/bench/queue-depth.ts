import { Queue } from "bullmq";
import type IORedis from "ioredis";
import { GENERATE_QUEUE } from "../jobs/job-queue";
import { workerConnection } from "../infra/redis";
import { startApiProcess } from "./api-process";
import { submit } from "./http-path";
import type { MemorySample } from "./memory-probe";
import { round, summarize, Summary } from "./stats";

export interface DepthWindow {
  /** Jobs in the queue when this window ended, the untimed warm-up jobs included. */
  queued: number;
  submitsPerSecond: number;
  postMs: Summary;
  getByIdMs: Summary;
  listMs: Summary;
  /** The API process after the window, after a forced GC. */
  api: MemorySample;
  redisUsedMiB: number;
}

export interface DepthResult {
  /** Timed jobs; `warmupJobs` more were queued first, untimed. */
  jobs: number;
  warmupJobs: number;
  clients: number;
  windowSize: number;
  /** How the jobs were kept queued; stated in results.json so the numbers are read the right way. */
  method: string;
  apiIdle: MemorySample;
  redisIdleMiB: number;
  windows: DepthWindow[];
  /** BullMQ's count of waiting + prioritized jobs before cleanup: must equal every job the API accepted. */
  queuedInBullmq: number;
  /** Last window ÷ first window. */
  ratios: { rss: number; heapUsed: number; postP99: number; getByIdP99: number; listP99: number };
  flat: { memory: boolean; p99: boolean; thresholds: { memory: number; p99: number } };
  obliterateSeconds: number;
  wallSeconds: number;
}

/**
 * Sequential reader loops per GET endpoint while a window's POSTs run. One loop gets only ~80 answers from a saturated
 * API in a window, too few for a p99 that is not simply the maximum; four give a few hundred for little extra load.
 */
const READERS_PER_ENDPOINT = 4;

/** Growth allowed before a line is called "not flat": memory is measured after GC; p99 on a shared 2-core box is noisy. */
const FLAT_MEMORY = 1.25;
const FLAT_P99 = 2;

async function timedGet(url: string): Promise<number> {
  const started = performance.now();
  const res = await fetch(url);
  await res.arrayBuffer();
  if (!res.ok) throw new Error(`GET ${url} answered ${res.status}`);
  return performance.now() - started;
}

async function redisUsedMiB(redis: IORedis): Promise<number> {
  const info = await redis.info("memory");
  return round(Number(/used_memory:(\d+)/.exec(info)?.[1] ?? Number.NaN) / 2 ** 20, 1);
}

/**
 * Fills the queue with `jobs` tiny jobs over HTTP with no worker to run them (a separate API-only process, its own
 * queue prefix) and watches how the API copes as the queue and the job table grow. Windows of `windowSize` submits run
 * one after another with `clients` concurrent submitters; while a window runs, reader loops sample GET /jobs/{id} (a
 * random job already queued) and GET /jobs?limit=20. Between windows the submitters pause and the API's memory is
 * sampled, so the forced GC behind the sample never lands inside a timed request. Ends by obliterating the queue.
 */
export async function runQueueDepthPhase(opts: {
  redisUrl: string;
  queuePrefix: string;
  jobs: number;
  clients: number;
  windowSize: number;
  log: (message: string) => void;
}): Promise<DepthResult> {
  const started = performance.now();
  const api = await startApiProcess({ redisUrl: opts.redisUrl, queuePrefix: opts.queuePrefix, startTimeoutMs: 60_000 });
  const connection = workerConnection(opts.redisUrl);
  const queue = new Queue(GENERATE_QUEUE, { connection, prefix: opts.queuePrefix });
  try {
    const apiIdle = await api.memory();
    const redisIdleMiB = await redisUsedMiB(connection);
    const snapshot = async () => ({ api: await api.memory(), redisUsedMiB: await redisUsedMiB(connection) });
    // Untimed warm-up, 10 jobs per client: the first Prisma queries, BullMQ's Lua script loading and V8's JIT are
    // start-up costs; left in, they would make the first window the slowest and hide any growth by the last.
    const ids = [await submit(api.url, 0)];
    const warmup = 10 * opts.clients;
    await runWindow(api.url, ids, 1, warmup, opts.clients, snapshot);

    const windows: DepthWindow[] = [];
    for (let from = warmup; from < warmup + opts.jobs; from += opts.windowSize) {
      const to = Math.min(from + opts.windowSize, warmup + opts.jobs);
      windows.push(await runWindow(api.url, ids, from, to, opts.clients, snapshot));
      const w = windows[windows.length - 1];
      opts.log(`  ${to} queued: POST p50/p99 ${w.postMs.p50}/${w.postMs.p99} ms, API RSS ${w.api.rssMiB} MiB, heap ${w.api.heapUsedMiB} MiB`);
    }

    const counts = await queue.getJobCounts("waiting", "prioritized", "active", "delayed");
    const queuedInBullmq = counts.waiting + counts.prioritized;
    if (queuedInBullmq !== ids.length || ids.length !== opts.jobs + warmup || counts.active !== 0) {
      throw new Error(`expected ${opts.jobs + warmup} queued jobs and none active; the API accepted ${ids.length}, BullMQ says ${JSON.stringify(counts)}`);
    }

    const first = windows[0];
    const last = windows[windows.length - 1];
    const ratio = (a: number, b: number) => round(b / a, 2);
    const ratios = {
      rss: ratio(first.api.rssMiB, last.api.rssMiB),
      heapUsed: ratio(first.api.heapUsedMiB, last.api.heapUsedMiB),
      postP99: ratio(first.postMs.p99, last.postMs.p99),
      getByIdP99: ratio(first.getByIdMs.p99, last.getByIdMs.p99),
      listP99: ratio(first.listMs.p99, last.listMs.p99),
    };

    // Draining would mean 10 000 × one generation; nothing about depth is learnt from that, so the queue is removed.
    const obliterateStarted = performance.now();
    await queue.obliterate({ force: true });
    const obliterateSeconds = round((performance.now() - obliterateStarted) / 1000, 2);
    const left = Object.values(await queue.getJobCounts()).reduce((a, b) => a + b, 0);
    if (left !== 0) throw new Error(`${left} jobs left in the depth queue after obliterate`);

    return {
      jobs: opts.jobs,
      warmupJobs: warmup,
      clients: opts.clients,
      windowSize: opts.windowSize,
      method: `separate API-only process (node dist/cli.js api), no worker on its queue prefix, so every job stays queued; ${warmup} untimed warm-up jobs first; queue obliterated afterwards, not drained`,
      apiIdle,
      redisIdleMiB,
      windows,
      queuedInBullmq,
      ratios,
      flat: {
        memory: Math.max(ratios.rss, ratios.heapUsed) <= FLAT_MEMORY,
        p99: Math.max(ratios.postP99, ratios.getByIdP99, ratios.listP99) <= FLAT_P99,
        thresholds: { memory: FLAT_MEMORY, p99: FLAT_P99 },
      },
      obliterateSeconds,
      wallSeconds: round((performance.now() - started) / 1000, 1),
    };
  } finally {
    // Also on failure: a queue of 10 000 jobs must not outlive the bench on a Redis the user may share (BENCH_REDIS_URL).
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    await connection.quit().catch(() => undefined);
    await api.close();
  }
}

/** Submits jobs [from, to) from `clients` concurrent clients while reader loops sample the read endpoints. */
async function runWindow(
  url: string,
  ids: string[],
  from: number,
  to: number,
  clients: number,
  sample: () => Promise<Pick<DepthWindow, "api" | "redisUsedMiB">>,
): Promise<DepthWindow> {
  const post: number[] = [];
  const byId: number[] = [];
  const list: number[] = [];
  let next = from;
  let submitting = true;
  const submitter = async () => {
    for (let i = next++; i < to; i = next++) {
      const t = performance.now();
      ids.push(await submit(url, 100_000 + i));
      post.push(performance.now() - t);
    }
  };
  const reader = async (path: () => string, into: number[]) => {
    while (submitting) into.push(await timedGet(`${url}${path()}`));
  };
  const windowStarted = performance.now();
  const readers = Array.from({ length: READERS_PER_ENDPOINT }, () => [
    reader(() => `/jobs/${ids[Math.floor(Math.random() * ids.length)]}`, byId),
    reader(() => "/jobs?limit=20", list),
  ]).flat();
  let wallS: number;
  try {
    await Promise.all(Array.from({ length: Math.min(clients, to - from) }, submitter));
    wallS = (performance.now() - windowStarted) / 1000;
  } finally {
    submitting = false;
    await Promise.allSettled(readers);
  }
  await Promise.all(readers); // surfaces a reader's failure
  return {
    queued: to,
    submitsPerSecond: round((to - from) / wallS, 0),
    postMs: summarize(post, 1),
    getByIdMs: summarize(byId, 1),
    listMs: summarize(list, 1),
    ...(await sample()),
  };
}
