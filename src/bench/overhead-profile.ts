import fs from "node:fs";
import { Job, Worker } from "bullmq";
import { RunnerSupervisor } from "../backends/runner-supervisor";
import { JobQueue } from "../jobs/job-queue";
import { JobsRepository } from "../jobs/jobs.repository";
import { JobsService } from "../jobs/jobs.service";
import { ModelsService } from "../models/models.service";
import type { CompletionTracker } from "./completions";
import { RedisMonitor } from "./redis-monitor";
import { submit } from "./http-path";
import { Span, SpanProbe } from "./span-probe";
import { round, summarize, Summary } from "./stats";

/**
 * (f) Where one job's time goes: the (a) C=1 path again, with timestamps around the service's seams, so the overhead
 * over a direct call is split into measured segments instead of guessed ones. Runs after (a) so (a)'s figures carry no
 * instrumentation; the probe itself costs a performance.now() pair per call.
 */
export interface ProfileResult {
  jobs: number;
  /** p50 (and p99) per segment, ms, in path order; `overhead` = total − the runner's own compute. */
  segments: Record<string, Summary>;
  /** Calls per job of each instrumented seam, p50. */
  callsPerJob: Record<string, number>;
  /**
   * CPU time per job, ms: this Node process (the service's API and worker, and the bench's client, which shares it) and
   * the runner process (its compute included). Work rather than waiting, so it holds on a busy machine; on two cores
   * every service millisecond spent while the runner computes is taken from the runner.
   */
  cpuMsPerJob: { node: number; runner: number | null };
  /** Redis commands per job from submit to completion (MONITOR; BullMQ scripts by name), p50; `total` is their sum. */
  redisPerJob: Record<string, number>;
  /** Seams this code base no longer has under the names the probe knows (the breakdown lacks them). */
  missing: string[];
}

type RunnerResult = { timings?: { loadMs?: number; generateMs?: number; postprocessMs?: number } };

/**
 * Every seam the breakdown needs, by class and method; a seam found under none of its names shows up in `missing`
 * rather than as a silent gap. Worker-side seams are BullMQ's own and the repository's, so they hold however the
 * worker's code is arranged.
 */
function instrument(probe: SpanProbe): void {
  probe.wrap(JobsService.prototype, "submit", "api.submit");
  probe.wrap(JobsService.prototype, "resolve", "api.resolve");
  probe.wrap(JobsRepository.prototype, "create", "db.create");
  probe.wrap(JobQueue.prototype, "add", "queue.add");
  probe.wrap(Worker.prototype, "processJob", "bullmq.processJob");
  probe.wrapFirst(JobsRepository.prototype, ["start", "markActive"], "db.start");
  probe.wrap(ModelsService.prototype, "resolve", "models.resolve");
  const supervisor = RunnerSupervisor.prototype as unknown as Record<string, unknown>;
  if (typeof supervisor.generate === "function") probe.wrap(supervisor, "generate", "runner.generate", { keep: true });
  else probe.wrap(supervisor, "request", "runner.generate", { keep: true, when: (args) => args[0] === "generate" });
  probe.wrap(Job.prototype, "updateProgress", "bullmq.updateProgress");
  probe.wrap(JobsRepository.prototype, "saveProgress", "db.saveProgress");
  probe.wrap(JobsRepository.prototype, "complete", "db.complete");
  probe.wrap(Job.prototype, "moveToCompleted", "bullmq.moveToCompleted");
}

/** utime + stime of a process from /proc (Linux), ms; null where that is not readable. */
function processCpuMs(pid: number | undefined): number | null {
  if (!pid) return null;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[11], fields[12]: utime, stime in clock ticks (USER_HZ, 100 on Linux)
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return null;
  }
}

const duration = (s: Span | undefined) => (s ? s.end - s.start : Number.NaN);

export async function runProfilePhase(opts: {
  url: string;
  redisUrl: string;
  tracker: CompletionTracker;
  jobs: number;
  seedBase: number;
  jobTimeoutMs: number;
  /** The runner process, for its CPU time (Linux /proc); absent elsewhere. */
  runnerPid?: () => number | undefined;
}): Promise<ProfileResult> {
  const probe = new SpanProbe();
  instrument(probe);
  const monitor = new RedisMonitor(opts.redisUrl);
  await monitor.start();
  const redis: Array<Record<string, number>> = [];
  const cpuBefore = process.cpuUsage();
  const runnerBefore = processCpuMs(opts.runnerPid?.());
  const rows: Array<Record<string, number>> = [];
  const calls: Record<string, number[]> = {};
  try {
    for (let i = 0; i < opts.jobs; i++) {
      const started = performance.now();
      const id = await submit(opts.url, opts.seedBase + i);
      const answered = performance.now();
      const done = await opts.tracker.wait(id, opts.jobTimeoutMs);
      if (!done.ok) throw new Error(`job ${id} failed: ${done.detail}`);
      // The client is told once the row is final, before the worker's own BullMQ calls for the job have returned (or,
      // some, begun); MONITOR lines trail the commands a little. The next job is not submitted before this one is counted.
      await new Promise((r) => setTimeout(r, 20));
      await probe.settled();
      const counted = performance.now();
      const spans = probe.within(started, counted);
      const commands = monitor.countsWithin(started, counted);
      redis.push({ ...commands, total: Object.values(commands).reduce((a, n) => a + n, 0) });
      const first = (label: string) => spans.find((s) => s.label === label);
      const last = (label: string) => [...spans].reverse().find((s) => s.label === label);
      for (const s of spans) calls[s.label] = calls[s.label] ?? [];
      for (const label of Object.keys(calls)) calls[label].push(spans.filter((s) => s.label === label).length);

      const apiSubmit = first("api.submit");
      const add = first("queue.add");
      const picked = first("bullmq.processJob");
      const gen = first("runner.generate");
      const moved = last("bullmq.moveToCompleted");
      const completed = first("db.complete");
      const t = (gen?.value as RunnerResult | undefined)?.timings ?? {};
      const compute = (t.loadMs ?? 0) + (t.generateMs ?? 0) + (t.postprocessMs ?? 0);
      const total = done.at - started;
      const gap = (from: number | undefined, to: number | undefined) => (from !== undefined && to !== undefined ? to - from : Number.NaN);
      rows.push({
        total,
        "overhead (total − runner compute)": total - compute,
        "POST /jobs (client round trip)": answered - started,
        "  HTTP, routing, validation (POST − JobsService.submit)": answered - started - duration(apiSubmit),
        "  resolve (defaults, model and engine checks)": duration(first("api.resolve")),
        "  db: insert row": duration(first("db.create")),
        "  BullMQ add": duration(add),
        "queue wait (add settled → worker picks the job)": gap(add?.end, picked?.start),
        "worker before runner (picked → generate sent)": gap(picked?.start, gen?.start),
        "  db: mark active": duration(first("db.start")),
        "  models.resolve (worker)": duration(last("models.resolve")),
        "runner request (generate sent → result parsed)": duration(gen),
        "  runner compute (load + generate + post-process)": compute,
        "    generate": t.generateMs ?? Number.NaN,
        "    post-process (PNG write, sha256 included)": t.postprocessMs ?? Number.NaN,
        "  stdio, runner threads, per-job set-up (request − compute)": duration(gen) - compute,
        "worker after runner (result → final state written)": gap(gen?.end, completed?.end),
        "  db: complete (PNG + timings)": duration(completed),
        "completion event (final state written → client sees it)": gap(completed?.end, done.at),
        "BullMQ moveToCompleted (after the client is told: off its path)": duration(moved),
        "BullMQ progress updates, summed": spans.filter((s) => s.label === "bullmq.updateProgress").reduce((a, s) => a + s.end - s.start, 0),
      });
    }
  } finally {
    probe.restore();
    monitor.stop();
  }
  const cpu = process.cpuUsage(cpuBefore);
  const runnerAfter = processCpuMs(opts.runnerPid?.());
  const cpuMsPerJob = {
    node: round((cpu.user + cpu.system) / 1000 / opts.jobs, 2),
    runner: runnerBefore !== null && runnerAfter !== null ? round((runnerAfter - runnerBefore) / opts.jobs, 1) : null,
  };
  const segments: Record<string, Summary> = {};
  for (const key of Object.keys(rows[0] ?? {})) segments[key] = summarize(rows.map((r) => r[key]).filter(Number.isFinite), 2);
  const callsPerJob = Object.fromEntries(Object.entries(calls).map(([k, v]) => [k, summarize(v, 1).p50]));
  const names = [...new Set(redis.flatMap((r) => Object.keys(r)))].sort();
  const redisPerJob = Object.fromEntries(names.map((n) => [n, summarize(redis.map((r) => r[n] ?? 0), 1).p50]));
  return { jobs: opts.jobs, segments, cpuMsPerJob, callsPerJob, redisPerJob, missing: probe.missing };
}

export function formatProfile(p: ProfileResult): string[] {
  const lines = [`(f) where one job's time goes (C=1, ${p.jobs} instrumented jobs), p50 / p99 ms:`];
  for (const [name, s] of Object.entries(p.segments)) lines.push(`  ${name.padEnd(64)}${String(round(s.p50, 2)).padStart(9)}${String(round(s.p99, 2)).padStart(9)}`);
  lines.push(`  CPU per job: node ${p.cpuMsPerJob.node} ms (service + bench client), runner ${p.cpuMsPerJob.runner ?? "n/a"} ms (compute included)`);
  lines.push(`  Redis commands per job: ${Object.entries(p.redisPerJob ?? {}).map(([k, v]) => `${k} ${v}`).join(", ")}`);
  lines.push(`  calls per job: ${Object.entries(p.callsPerJob).map(([k, v]) => `${k} ${v}`).join(", ")}`);
  if (p.missing.length) lines.push(`  not instrumented (renamed or gone): ${p.missing.join(", ")}`);
  return lines;
}
