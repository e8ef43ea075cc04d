import { Queue, Worker } from "bullmq";
import { workerConnection } from "../infra/redis";
import { CompletionTracker } from "./completions";
import { round, summarize, Summary } from "./stats";

export interface RawLoopResult {
  inFlight: number;
  jobs: number;
  jobsPerSecond: number;
  /** queue.add() start → "completed" event, ms. */
  roundTripMs: Summary;
}

export interface RawPhaseResult {
  workerConcurrency: number;
  /** Saturated: as many producers in flight as the worker's concurrency. */
  loaded: RawLoopResult;
  /** One job at a time: the floor BullMQ itself puts under every job. */
  sequential: RawLoopResult;
}

/**
 * (c): no-op jobs through BullMQ on the service's Redis, under their own prefix so they never meet the generate queue.
 * Completion is observed through BullMQ's own events (QueueEvents): these jobs have no row and no job events.
 */
export async function runRawPhase(opts: { redisUrl: string; prefix: string; jobs: number; concurrency: number; sequentialJobs: number }): Promise<RawPhaseResult> {
  const name = "noop";
  // Our own connections, closed at the end: BullMQ leaves connections it was handed open.
  const conn = workerConnection(opts.redisUrl);
  const workerConn = workerConnection(opts.redisUrl);
  // A larger events stream than the 10 000 default, so no completed event is trimmed before QueueEvents reads it.
  const queue = new Queue(name, { connection: conn, prefix: opts.prefix, streams: { events: { maxLen: 100_000 } } });
  const worker = new Worker(name, async () => null, { connection: workerConn, prefix: opts.prefix, concurrency: opts.concurrency });
  const tracker = new CompletionTracker({ kind: "queueEvents", queueName: name, redisUrl: opts.redisUrl, prefix: opts.prefix });
  try {
    await Promise.all([queue.waitUntilReady(), worker.waitUntilReady(), tracker.ready()]);
    // Warm-up: first commands load BullMQ's Lua scripts into Redis.
    await loop(queue, tracker, 100, 10);
    const loaded = await loop(queue, tracker, opts.jobs, opts.concurrency);
    const sequential = await loop(queue, tracker, opts.sequentialJobs, 1);
    return { workerConcurrency: opts.concurrency, loaded, sequential };
  } finally {
    await worker.close();
    await tracker.close();
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    await conn.quit().catch(() => undefined);
    await workerConn.quit().catch(() => undefined);
  }
}

let counter = 0;

async function loop(queue: Queue, tracker: CompletionTracker, jobs: number, inFlight: number): Promise<RawLoopResult> {
  const trips: number[] = [];
  let next = 0;
  const producer = async () => {
    for (let i = next++; i < jobs; i = next++) {
      const jobId = `raw-${++counter}`;
      const started = performance.now();
      await queue.add("noop", { i }, { jobId, removeOnComplete: true, removeOnFail: true });
      const done = await tracker.wait(jobId, 30_000);
      if (!done.ok) throw new Error(`no-op job ${jobId} failed: ${done.detail}`);
      trips.push(done.at - started);
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: Math.min(inFlight, jobs) }, producer));
  const wallS = (performance.now() - started) / 1000;
  return { inFlight, jobs, jobsPerSecond: round(jobs / wallS, 0), roundTripMs: summarize(trips, 2) };
}
