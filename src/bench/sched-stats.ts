import fs from "node:fs";
import path from "node:path";

/**
 * How much CPU a process got, and how long its threads sat runnable without one, from Linux's per-thread
 * `/proc/<pid>/task/<tid>/schedstat` (run time ns, run-queue wait ns, timeslices) and `status` (involuntary context
 * switches). The bench uses it to see whether the service's own processes keep its runner off the CPU while the runner
 * computes: that time lands inside the runner's reported compute, where "beyond compute" cannot see it
 * (docs/environment.md, "Measuring the service overhead").
 */
export interface SchedSample {
  cpuMs: number;
  runqueueWaitMs: number;
  involuntarySwitches: number;
}

/** The process's threads summed; null where the kernel has no schedstat (not Linux) or the process is gone. */
export function schedSample(pid: number | undefined, procRoot = "/proc"): SchedSample | null {
  if (pid === undefined) return null;
  const tasks = path.join(procRoot, String(pid), "task");
  let tids: string[];
  try {
    tids = fs.readdirSync(tasks);
  } catch {
    return null;
  }
  const sample: SchedSample = { cpuMs: 0, runqueueWaitMs: 0, involuntarySwitches: 0 };
  for (const tid of tids) {
    try {
      const [run, wait] = fs.readFileSync(path.join(tasks, tid, "schedstat"), "utf8").trim().split(/\s+/).map(Number);
      const switches = /^nonvoluntary_ctxt_switches:\s*(\d+)/m.exec(fs.readFileSync(path.join(tasks, tid, "status"), "utf8"));
      if (!Number.isFinite(run) || !Number.isFinite(wait)) return null;
      sample.cpuMs += run / 1e6;
      sample.runqueueWaitMs += wait / 1e6;
      sample.involuntarySwitches += switches ? Number(switches[1]) : 0;
    } catch {
      // A thread that ended between the listing and the read: its time is lost to both samples alike.
    }
  }
  return sample;
}

export interface SchedSummary {
  /** Jobs the figures cover: blocks whose process was the same at both ends. */
  jobs: number;
  cpuMsPerJob: number;
  runqueueWaitMsPerJob: number;
  involuntarySwitchesPerJob: number;
}

/** Per-job scheduling figures of one process over the blocks of jobs it ran, each measured from a sample on either side. */
export class SchedTally {
  private jobs = 0;
  private readonly total: SchedSample = { cpuMs: 0, runqueueWaitMs: 0, involuntarySwitches: 0 };

  /**
   * Runs `block` between two samples of `pid()` (read again at the end: a runner restarted meanwhile is another
   * process, and that block is left out).
   */
  async measure<T>(pid: () => number | undefined, jobs: number, block: () => Promise<T>, procRoot = "/proc"): Promise<T> {
    const startPid = pid();
    const before = schedSample(startPid, procRoot);
    const result = await block();
    const after = pid() === startPid ? schedSample(startPid, procRoot) : null;
    if (before && after) {
      this.jobs += jobs;
      this.total.cpuMs += after.cpuMs - before.cpuMs;
      this.total.runqueueWaitMs += after.runqueueWaitMs - before.runqueueWaitMs;
      this.total.involuntarySwitches += after.involuntarySwitches - before.involuntarySwitches;
    }
    return result;
  }

  summary(): SchedSummary | undefined {
    if (this.jobs === 0) return undefined;
    const per = (v: number, digits: number) => +(v / this.jobs).toFixed(digits);
    return {
      jobs: this.jobs,
      cpuMsPerJob: per(this.total.cpuMs, 1),
      runqueueWaitMsPerJob: per(this.total.runqueueWaitMs, 2),
      involuntarySwitchesPerJob: per(this.total.involuntarySwitches, 1),
    };
  }
}
