import type { DirectPhaseResult } from "./direct-path";
import type { HttpPhaseResult } from "./http-path";
import type { MachineInfo, Versions } from "./machine";
import type { MlxPhaseResult } from "./mlx-engines";
import { formatProfile, ProfileResult } from "./overhead-profile";
import type { DepthResult } from "./queue-depth";
import type { RawPhaseResult } from "./raw-bullmq";
import { formatDepthTable, formatLoadTable } from "./report-load";
import type { SchedSummary } from "./sched-stats";
import { round } from "./stats";

/** The 1-client rows run by the service's runner, and with (b) and (b′) those whose Python process the bench watches. */
const SERVICE_ROWS = ["http", "httpSharedProcess", "ws"] as const;
export type SchedRow = "direct" | "directTwin" | (typeof SERVICE_ROWS)[number];

export interface BenchResults {
  timestamp: string;
  machine: MachineInfo;
  versions: Versions;
  settings: Record<string, unknown>;
  /** (a) from a client process of its own, per concurrency. */
  http: HttpPhaseResult[];
  /** (a) at C=1 with the client inside the service's process (how runs before 2026-12 measured it); absent in those. */
  httpSharedProcess?: HttpPhaseResult;
  /** (g) the extension's WebSocket path at C=1 (ws-path.ts), in the same blocks as (a) and (b); absent in earlier results. */
  ws?: HttpPhaseResult;
  direct: DirectPhaseResult;
  /** A second direct process run in the same blocks as (b); absent in results written before it existed. */
  directTwin?: Pick<DirectPhaseResult, "jobs" | "latencyMs" | "generateMs">;
  rawBullmq: RawPhaseResult;
  comparison: Comparison;
  /**
   * The Python process behind each 1-client row ((b), (b′), and the service's runner during (a), its shared-process
   * variant and (g)): CPU per job and time runnable without a CPU per job (sched-stats.ts); absent off Linux and in
   * results written before it existed.
   */
  runnerScheduling?: Partial<Record<SchedRow, SchedSummary>>;
  /** (f) the per-job breakdown; absent when skipped (BENCH_PROFILE_JOBS=0) and in results written before it existed. */
  profile?: ProfileResult;
  mlx: MlxPhaseResult;
  /** (e) the API with a deep queue; absent in results written before it existed. */
  queueDepth?: DepthResult | { ran: false; reason: string };
  totalSeconds: number;
}

export interface Comparison {
  /** (a) p50 at C=1 − (b) p50: what API + queue + DB + runner protocol add to one job, ms. */
  serviceOverheadMsP50: number;
  /** The same with the client inside the service's process (httpSharedProcess). */
  serviceOverheadMsP50SharedProcess?: number;
  /** (a)/(b) p50 at C=1 for that row. */
  sharedProcessP50Ratio?: number;
  /** p50 over the C=1 jobs of (a) of each job's latency less the runner's own compute for it (HttpPhaseResult). */
  serviceBeyondComputeMsP50?: number;
  /** The twin direct process's p50 − (b)'s: what (a) − (b) can be off by when the service adds nothing. */
  directTwinMsP50?: number;
  /** As serviceBeyondComputeMsP50, on the extension's path (g): submit frame → `completed` frame with the RGBA. */
  wsBeyondComputeMsP50?: number;
  /** (g) p50 − (b) p50. */
  wsOverheadMsP50?: number;
  /**
   * Per 1-client row: how much longer per job the service's runner sat runnable without a CPU than (b)'s process did,
   * ms (runnerScheduling). It is inside the runner's reported compute, so the beyond-compute figures leave it out.
   */
  runnerWaitOverDirectMsPerJob?: Partial<Record<(typeof SERVICE_ROWS)[number], number>>;
  /** Per concurrency: (a)/(b) for p50 and p99 latency, and (b)'s jobs/s ÷ (a)'s. */
  ratios: Array<{ concurrency: number; p50: number; p99: number; throughput: number }>;
}

export function compare(
  http: HttpPhaseResult[],
  direct: DirectPhaseResult,
  shared?: HttpPhaseResult,
  twin?: Pick<DirectPhaseResult, "latencyMs">,
  ws?: HttpPhaseResult,
  scheduling?: BenchResults["runnerScheduling"],
): Comparison {
  const one = http.find((h) => h.concurrency === 1) ?? http[0];
  const directJobsPerSecond = 1000 / direct.latencyMs.mean;
  const directWait = scheduling?.direct?.runqueueWaitMsPerJob;
  const waits = Object.fromEntries(
    SERVICE_ROWS.flatMap((row) => {
      const wait = scheduling?.[row]?.runqueueWaitMsPerJob;
      return wait === undefined || directWait === undefined ? [] : [[row, round(wait - directWait, 2)]];
    }),
  );
  return {
    ...(Object.keys(waits).length ? { runnerWaitOverDirectMsPerJob: waits } : {}),
    serviceOverheadMsP50: round(one.latencyMs.p50 - direct.latencyMs.p50, 1),
    ...(one.beyondComputeMs ? { serviceBeyondComputeMsP50: round(one.beyondComputeMs.p50, 1) } : {}),
    ...(twin ? { directTwinMsP50: round(twin.latencyMs.p50 - direct.latencyMs.p50, 1) } : {}),
    ...(ws
      ? { wsBeyondComputeMsP50: round(ws.beyondComputeMs.p50, 1), wsOverheadMsP50: round(ws.latencyMs.p50 - direct.latencyMs.p50, 1) }
      : {}),
    ...(shared
      ? {
          serviceOverheadMsP50SharedProcess: round(shared.latencyMs.p50 - direct.latencyMs.p50, 1),
          sharedProcessP50Ratio: round(shared.latencyMs.p50 / direct.latencyMs.p50, 2),
        }
      : {}),
    ratios: http.map((h) => ({
      concurrency: h.concurrency,
      p50: round(h.latencyMs.p50 / direct.latencyMs.p50, 2),
      p99: round(h.latencyMs.p99 / direct.latencyMs.p99, 2),
      throughput: round(directJobsPerSecond / h.jobsPerSecond, 2),
    })),
  };
}

const pad = (s: string | number, w: number) => String(s).padStart(w);

export function formatTable(r: BenchResults): string {
  const m = r.machine;
  const rows: Array<[string, number | string, number | string, number | string]> = [
    ...r.http.map((h): [string, number, number, number] => [`(a) HTTP submit→completed, C=${h.concurrency}`, h.jobsPerSecond, h.latencyMs.p50, h.latencyMs.p99]),
    ...(r.httpSharedProcess
      ? [["(a) same, C=1, client in the service's process", r.httpSharedProcess.jobsPerSecond, r.httpSharedProcess.latencyMs.p50, r.httpSharedProcess.latencyMs.p99] as [string, number, number, number]]
      : []),
    ...(r.ws ? [["(g) extension: WS submit→completed frame, C=1", r.ws.jobsPerSecond, r.ws.latencyMs.p50, r.ws.latencyMs.p99] as [string, number, number, number]] : []),
    ["(b) direct in-process (no service)", r.direct.jobsPerSecond ?? round(1000 / r.direct.latencyMs.mean, 2), r.direct.latencyMs.p50, r.direct.latencyMs.p99],
    [`(c) raw BullMQ no-op, ${r.rawBullmq.loaded.inFlight} in flight`, r.rawBullmq.loaded.jobsPerSecond, r.rawBullmq.loaded.roundTripMs.p50, r.rawBullmq.loaded.roundTripMs.p99],
    ["(c) raw BullMQ no-op, 1 in flight", r.rawBullmq.sequential.jobsPerSecond, r.rawBullmq.sequential.roundTripMs.p50, r.rawBullmq.sequential.roundTripMs.p99],
  ];
  const lines = [
    `PixelAI bench ${r.timestamp}`,
    `machine: ${m.cpuModel} × ${m.cores} cores, ${m.memoryGiB} GiB, ${m.platform}; load avg ${m.loadAvgStart} → ${m.loadAvgEnd}; nice ${m.nice}; OMP_NUM_THREADS ${m.ompNumThreads}`,
    `versions: ${Object.entries(r.versions)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ")}`,
    ...(Math.max(m.loadAvgStart, m.loadAvgEnd ?? 0) > m.cores
      ? [`warning: load average above the core count: other processes shared the CPUs, tails (p99) are noisy`]
      : []),
    `job: ${r.settings.job}; ${r.settings.jobs} jobs per row (at least 3 per client) after warm-up; completion seen via ${r.settings.completionSignal}`,
    "",
    `${"path".padEnd(44)}${pad("jobs/s", 9)}${pad("p50 ms", 10)}${pad("p99 ms", 10)}`,
    ...rows.map(([name, tps, p50, p99]) => `${name.padEnd(44)}${pad(tps, 9)}${pad(p50, 10)}${pad(p99, 10)}`),
    "",
    `service overhead per job, p50 (a C=1 − b): ${r.comparison.serviceOverheadMsP50} ms` +
      (r.comparison.serviceOverheadMsP50SharedProcess !== undefined
        ? `; with the client in the service's process ${r.comparison.serviceOverheadMsP50SharedProcess} ms (×${r.comparison.sharedProcessP50Ratio})`
        : ""),
    ...(r.comparison.serviceBeyondComputeMsP50 !== undefined
      ? [`service time per job beyond the runner's own compute for it, p50 (C=1): ${r.comparison.serviceBeyondComputeMsP50} ms`]
      : []),
    ...(r.comparison.wsBeyondComputeMsP50 !== undefined
      ? [
          `the same on the extension's path (g), to the completed frame with its RGBA: ${r.comparison.wsBeyondComputeMsP50} ms (g − b: ${r.comparison.wsOverheadMsP50} ms; accepted frame p50 ${r.ws?.submitMs.p50} ms)`,
        ]
      : []),
    ...(r.comparison.directTwinMsP50 !== undefined
      ? [`a second direct process in the same blocks, p50 − b's: ${r.comparison.directTwinMsP50} ms (the spread between two processes)`]
      : []),
    ...r.comparison.ratios.map((x) => `a/b at C=${x.concurrency}: p50 ×${x.p50}, p99 ×${x.p99}, throughput b/a ×${x.throughput}`),
    ...r.http.map(
      (h) =>
        `  C=${h.concurrency} as the service recorded it (p50): queue ${h.serviceTimings.queueMs.p50} ms, runner generate ${h.serviceTimings.generateMs.p50} ms, post-process ${h.serviceTimings.postprocessMs.p50} ms; POST /jobs ${h.submitMs.p50} ms`,
    ),
    `  direct: generate p50 ${r.direct.generateMs.p50} ms (torch threads ${r.direct.torchThreads}, device ${r.direct.device}; cold first job ${r.direct.coldFirstJobSeconds} s)`,
    ...Object.entries(r.runnerScheduling ?? {}).map(
      ([row, s]) =>
        `  Python process during ${row}, per job: CPU ${s.cpuMsPerJob} ms, runnable without a CPU ${s.runqueueWaitMsPerJob} ms, preempted ${s.involuntarySwitchesPerJob}× (${s.jobs} jobs)`,
    ),
    ...(r.comparison.runnerWaitOverDirectMsPerJob
      ? [`  the service's runner waited for a CPU beyond (b), ms per job: ${JSON.stringify(r.comparison.runnerWaitOverDirectMsPerJob)}`]
      : []),
    "",
    ...(r.profile ? [...formatProfile(r.profile), ""] : []),
    ...formatLoadTable(r.http),
    "",
    ...(r.queueDepth ? [...formatDepthTable(r.queueDepth), ""] : []),
    r.mlx.ran
      ? `(d) MLX vs Torch, tiny pipeline s/img: torch ${r.mlx.tiny?.torch}, mlx fp32 ${r.mlx.tiny?.mlxFloat32}, mlx fp16 ${r.mlx.tiny?.mlxFloat16}; ratios ${JSON.stringify(r.mlx.tiny?.ratios ?? {})}` +
        (r.mlx.sd15UnetRatios ? `; SD-1.5 UNet ratios ${JSON.stringify(r.mlx.sd15UnetRatios)}` : "")
      : `(d) MLX vs Torch skipped: ${r.mlx.reason}`,
    `total ${r.totalSeconds} s`,
  ];
  return lines.join("\n");
}
