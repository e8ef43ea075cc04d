import type { HttpPhaseResult } from "./http-path";
import type { DepthResult } from "./queue-depth";

/** Right-aligned columns; the first is left-aligned. Widths come from the content so the tables stay readable. */
function table(header: string[], rows: Array<Array<string | number>>): string[] {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  return cells.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  "));
}

/** (a) per client count: throughput, submit→completed, and how long POST /jobs itself took while the runner was busy. */
export function formatLoadTable(http: HttpPhaseResult[]): string[] {
  return [
    "(a) full HTTP path under load (closed-loop clients, one warm runner: beyond 1 client the jobs queue)",
    ...table(
      ["clients", "jobs", "jobs/s", "done p50 ms", "done p99 ms", "POST p50 ms", "POST p99 ms", "queue p50 ms"],
      http.map((h) => [h.concurrency, h.jobs, h.jobsPerSecond, h.latencyMs.p50, h.latencyMs.p99, h.submitMs.p50, h.submitMs.p99, h.serviceTimings.queueMs.p50]),
    ),
  ];
}

export function formatDepthTable(d: DepthResult | { ran: false; reason: string }): string[] {
  if ("ran" in d) return [`(e) queue depth skipped: ${d.reason}`];
  const verdict = (flat: boolean) => (flat ? "flat" : "NOT flat");
  return [
    `(e) queue depth: ${d.jobs} + ${d.warmupJobs} warm-up jobs queued over HTTP by ${d.clients} clients, no worker (${d.method})`,
    `    API process idle: RSS ${d.apiIdle.rssMiB} MiB, heap ${d.apiIdle.heapUsedMiB} MiB; redis ${d.redisIdleMiB} MiB. Memory after a forced GC; GETs sampled while each window's POSTs ran`,
    ...table(
      ["queued", "POST/s", "POST p50", "POST p99", "GET id p50", "GET id p99", "list p50", "list p99", "RSS MiB", "heap MiB", "redis MiB"],
      d.windows.map((w) => [w.queued, w.submitsPerSecond, w.postMs.p50, w.postMs.p99, w.getByIdMs.p50, w.getByIdMs.p99, w.listMs.p50, w.listMs.p99, w.api.rssMiB, w.api.heapUsedMiB, w.redisUsedMiB]),
    ),
    `    last/first window: RSS ×${d.ratios.rss}, heap ×${d.ratios.heapUsed} → memory ${verdict(d.flat.memory)} (≤ ×${d.flat.thresholds.memory}); ` +
      `p99 POST ×${d.ratios.postP99}, GET id ×${d.ratios.getByIdP99}, list ×${d.ratios.listP99} → p99 ${verdict(d.flat.p99)} (≤ ×${d.flat.thresholds.p99})`,
    `    BullMQ held ${d.queuedInBullmq} queued jobs (all accepted ones); obliterated in ${d.obliterateSeconds} s; phase ${d.wallSeconds} s. Times in ms.`,
  ];
}
