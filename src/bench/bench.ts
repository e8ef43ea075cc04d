/**
 * `npm run bench`: what the service costs on top of the model. Runs, in one process and one sitting:
 *   (a) the full HTTP path on the tiny model at C=1, 8 and 64 clients (in a client process of their own, and C=1 once
 *   more from inside the service's process, as earlier runs did), (g) the Aseprite extension's WebSocket path at C=1 in
 *   the same blocks (ws-path.ts), (b) the same job called directly in Python, in blocks
 *   of 10 jobs alternating with (a)'s C=1 blocks, and a twin of (b) in a second Python process in the same blocks,
 *   (c) raw BullMQ no-op jobs on the same Redis, (e) the API with 10 000 jobs queued (memory and latency as the queue
 *   grows, in a separate API-only process), (d) optionally the MLX-vs-Torch engine bench;
 * writes bench/results.json and prints tables. Env: BENCH_JOBS (100; a row runs at least 3 jobs per client),
 * BENCH_CONCURRENCY ("1,8,64"), BENCH_RAW_JOBS (2000), BENCH_RAW_CONCURRENCY (50), BENCH_DEPTH_JOBS (10000; 0 skips (e)),
 * BENCH_DEPTH_CLIENTS (32), BENCH_DEPTH_WINDOW (1000), BENCH_PROFILE_JOBS (30; 0 skips (f)), BENCH_MLX (tiny|full|off,
 * default tiny), BENCH_OUT,
 * BENCH_REDIS_URL, BENCH_LOG_LEVEL.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startBenchStack } from "./bench-stack";
import { runHttpPhaseInClient } from "./client-process";
import { CompletionTracker } from "./completions";
import { DirectSession } from "./direct-path";
import { HttpPhaseResult, mergeHttpPhases, runHttpPhase, TINY_JOB, withoutRaw } from "./http-path";
import { machineInfo, versionsInfo } from "./machine";
import { MlxMode, runMlxPhase } from "./mlx-engines";
import { runProfilePhase } from "./overhead-profile";
import { runQueueDepthPhase } from "./queue-depth";
import { runRawPhase } from "./raw-bullmq";
import { BenchResults, compare, formatTable, SchedRow } from "./report";
import { SchedTally } from "./sched-stats";
import { round } from "./stats";

function envInt(name: string, fallback: number, min = 1): number {
  const raw = process.env[name];
  if (!raw) return fallback;
  const n = Number.parseInt(raw, 10);
  if (!Number.isFinite(n) || n < min) throw new Error(`${name} must be an integer ≥ ${min}, got ${JSON.stringify(raw)}`);
  return n;
}

/**
 * Jobs for one row of (a): with C closed-loop clients the first C jobs only ramp the queue up, so a row needs several
 * jobs per client before its percentiles describe the loaded state rather than the ramp.
 */
/** Jobs per block when (a) at one client and (b) alternate. */
const BLOCK_JOBS = 10;

function jobsFor(concurrency: number, jobs: number): number {
  return Math.max(jobs, 3 * concurrency);
}

function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

async function main(): Promise<void> {
  const started = performance.now();
  const machine = machineInfo();
  const jobs = envInt("BENCH_JOBS", 100);
  const concurrencies = (process.env.BENCH_CONCURRENCY ?? "1,8,64").split(",").map((c) => envIntValue(c.trim()));
  const rawJobs = envInt("BENCH_RAW_JOBS", 2000);
  const rawConcurrency = envInt("BENCH_RAW_CONCURRENCY", 50);
  const depthJobs = envInt("BENCH_DEPTH_JOBS", 10_000, 0);
  const depthClients = envInt("BENCH_DEPTH_CLIENTS", 32);
  const depthWindow = envInt("BENCH_DEPTH_WINDOW", 1000);
  const profileJobs = envInt("BENCH_PROFILE_JOBS", 30, 0);
  const mlxMode = (process.env.BENCH_MLX ?? "tiny") as MlxMode;
  if (!["tiny", "full", "off"].includes(mlxMode)) throw new Error(`BENCH_MLX must be tiny, full or off`);

  log("starting the service (managed redis, temp SQLite, warm torch runner)…");
  const stack = await startBenchStack();
  const { config } = stack;
  const outPath = path.resolve(config.repoRoot, process.env.BENCH_OUT ?? path.join("bench", "results", "service.json"));
  let results: BenchResults;
  try {
    const versions = await versionsInfo(config.repoRoot, stack.service.redisUrl);

    // (b) and (a) with one client side by side: blocks of each in turn, so load that comes and goes on a shared machine
    // weighs on both paths alike. Each idles while the other runs (the runner waits on stdin, and so does bench_direct).
    log("(b) direct in-process: loading the pipeline and warming up…");
    const directOpts = { python: config.python, repoRoot: config.repoRoot, modelsRoot: config.modelsRoot, timeoutMs: 240_000 };
    const session = await DirectSession.start(directOpts);
    Object.assign(versions, session.versions);
    // A second, identical direct process in the same blocks: how far two Python processes running the same jobs drift
    // apart is the noise floor of comparing (a) with (b), which are two processes as well.
    const twin = await DirectSession.start(directOpts);

    const tracker = new CompletionTracker({ kind: "jobEvents", redisUrl: stack.service.redisUrl, prefix: config.queuePrefix });
    await tracker.ready();
    try {
      log("(a) warm-up: 3 jobs over HTTP (loads the pipeline in the runner)…");
      await runHttpPhase({ url: stack.url, tracker, jobs: 3, concurrency: 1, seedBase: 0, jobTimeoutMs: 180_000 });
      const clientTask = { url: stack.url, redisUrl: stack.service.redisUrl, prefix: config.queuePrefix, jobTimeoutMs: 120_000 };
      const blocks = Math.ceil(jobs / BLOCK_JOBS);
      log(`(a) 1 client, (g) the extension's path and (b) direct: ${jobs} jobs each, in ${blocks} alternating blocks…`);
      // The Python process behind each row: its CPU per job and how long it sat runnable without a CPU (sched-stats.ts).
      const runnerPid = () => stack.service.runners.get("torch")?.pid;
      const sched: Record<SchedRow, SchedTally> = {
        direct: new SchedTally(),
        directTwin: new SchedTally(),
        http: new SchedTally(),
        httpSharedProcess: new SchedTally(),
        ws: new SchedTally(),
      };
      const oneClient: HttpPhaseResult[] = [];
      const sharedProcess: HttpPhaseResult[] = [];
      const extension: HttpPhaseResult[] = [];
      for (let b = 0; b < blocks; b++) {
        const n = Math.min(BLOCK_JOBS, jobs - b * BLOCK_JOBS);
        const blockTimeoutMs = 60_000 + n * 10_000;
        await sched.direct.measure(() => session.pid, n, () => session.run(n, blockTimeoutMs));
        await sched.directTwin.measure(() => twin.pid, n, () => twin.run(n, blockTimeoutMs));
        oneClient.push(
          await sched.http.measure(runnerPid, n, () =>
            runHttpPhaseInClient({ ...clientTask, jobs: n, concurrency: 1, seedBase: 1000 + b * BLOCK_JOBS }, blockTimeoutMs),
          ),
        );
        // Runs before 2026-12 had the client inside the service's process; this row keeps them comparable.
        sharedProcess.push(
          await sched.httpSharedProcess.measure(runnerPid, n, () =>
            runHttpPhase({ url: stack.url, tracker, jobs: n, concurrency: 1, seedBase: 500_000 + b * BLOCK_JOBS, jobTimeoutMs: 120_000 }),
          ),
        );
        extension.push(
          await sched.ws.measure(runnerPid, n, () =>
            runHttpPhaseInClient({ ...clientTask, path: "ws", jobs: n, concurrency: 1, seedBase: 700_000 + b * BLOCK_JOBS }, blockTimeoutMs),
          ),
        );
      }
      const runnerScheduling = Object.fromEntries(
        Object.entries(sched).flatMap(([row, tally]) => {
          const summary = tally.summary();
          return summary ? [[row, summary]] : [];
        }),
      );
      const direct = await session.finish();
      const directTwin = await twin.finish();
      const http = [mergeHttpPhases(oneClient)];
      const httpSharedProcess = withoutRaw(mergeHttpPhases(sharedProcess));
      const ws = withoutRaw(mergeHttpPhases(extension));
      for (const c of concurrencies.filter((c) => c !== 1)) {
        const n = jobsFor(c, jobs);
        log(`(a) HTTP: ${n} jobs, ${c} concurrent clients (a client process of their own)…`);
        http.push(withoutRaw(await runHttpPhaseInClient({ ...clientTask, jobs: n, concurrency: c, seedBase: 1000 * c }, 60_000 + n * 10_000)));
      }

      log(profileJobs ? `(f) per-job breakdown: ${profileJobs} instrumented jobs, 1 client…` : "(f) breakdown skipped (BENCH_PROFILE_JOBS=0)");
      const profile = profileJobs
        ? await runProfilePhase({ url: stack.url, redisUrl: stack.service.redisUrl, runnerPid, tracker, jobs: profileJobs, seedBase: 900_000, jobTimeoutMs: 120_000 })
        : undefined;

      log(`(c) raw BullMQ: ${rawJobs} no-op jobs, concurrency ${rawConcurrency}…`);
      const rawBullmq = await runRawPhase({ redisUrl: stack.service.redisUrl, prefix: `${config.queuePrefix}-raw`, jobs: rawJobs, concurrency: rawConcurrency, sequentialJobs: 200 });

      // (e) last while the stack is up, for its Redis only: the in-process worker and runner sit idle meanwhile.
      log(depthJobs ? `(e) queue depth: ${depthJobs} jobs, ${depthClients} clients, API in its own process…` : "(e) queue depth skipped (BENCH_DEPTH_JOBS=0)");
      const queueDepth = depthJobs
        ? await runQueueDepthPhase({ redisUrl: stack.service.redisUrl, queuePrefix: `${config.queuePrefix}-depth`, jobs: depthJobs, clients: depthClients, windowSize: depthWindow, log })
        : { ran: false as const, reason: "BENCH_DEPTH_JOBS=0" };
      results = {
        timestamp: new Date().toISOString(),
        machine,
        versions,
        settings: {
          job: `${TINY_JOB.model} ${TINY_JOB.width}×${TINY_JOB.height}, ${TINY_JOB.steps} ${TINY_JOB.scheduler} steps, cfg ${TINY_JOB.guidanceScale} → ${TINY_JOB.pixel.width}×${TINY_JOB.pixel.height} px, ${TINY_JOB.pixel.colors} colours`,
          jobs,
          concurrencies: [1, ...concurrencies.filter((c) => c !== 1)],
          blockJobs: BLOCK_JOBS,
          workerConcurrency: config.workerConcurrency,
          rawJobs,
          rawConcurrency,
          depthJobs,
          depthClients,
          depthWindow,
          profileJobs,
          completionSignal: "the service's final-state job event, as its WebSocket and SSE watchers get it (no polling)",
          mlxMode,
        },
        http,
        direct,
        directTwin: { jobs: directTwin.jobs, latencyMs: directTwin.latencyMs, generateMs: directTwin.generateMs },
        rawBullmq,
        httpSharedProcess,
        ws,
        comparison: compare(http, direct, httpSharedProcess, directTwin, ws, runnerScheduling),
        ...(Object.keys(runnerScheduling).length ? { runnerScheduling } : {}),
        profile,
        mlx: { ran: false, reason: "not run yet" },
        queueDepth,
        totalSeconds: 0,
      };
    } finally {
      await tracker.close();
    }
  } finally {
    await stack.close();
  }

  // (d) after the service is gone: it spawns its own processes and wants the CPUs to itself.
  log(`(d) MLX vs Torch engine bench (${mlxMode})…`);
  results.mlx = await runMlxPhase({ python: config.python, repoRoot: config.repoRoot, mode: mlxMode, timeoutMs: mlxMode === "full" ? 900_000 : 180_000 });
  results.machine.loadAvgEnd = +os.loadavg()[0].toFixed(2);
  results.totalSeconds = round((performance.now() - started) / 1000, 1);

  fs.mkdirSync(path.dirname(outPath), { recursive: true });
  fs.writeFileSync(outPath, JSON.stringify(results, null, 2) + "\n");
  process.stdout.write(formatTable(results) + "\n");
  log(`wrote ${path.relative(process.cwd(), outPath)}`);
}

function envIntValue(raw: string): number {
  const n = Number.parseInt(raw, 10);
  if (!Number.isFinite(n) || n < 1) throw new Error(`BENCH_CONCURRENCY must list positive integers, got ${JSON.stringify(raw)}`);
  return n;
}

main().then(
  // Explicit exit: ioredis/undici keep-alive handles would otherwise hold the process open for a while.
  () => process.exit(0),
  (err) => {
    process.stderr.write(`[bench] failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
