import http from "node:http";
import type { CompletionTracker } from "./completions";
import { round, summarize, Summary } from "./stats";

/** The tiny job every phase runs: tiny-sd, 64×64, 4 Euler steps, reduced to a 32×32 grid of 8 colours. */
export const TINY_JOB = {
  prompt: "a pixel art knight",
  model: "tiny-sd",
  engine: "torch",
  width: 64,
  height: 64,
  steps: 4,
  guidanceScale: 7,
  scheduler: "euler",
  pixel: { width: 32, height: 32, colors: 8, fitMode: "contain" },
} as const;

export interface HttpPhaseResult {
  concurrency: number;
  jobs: number;
  wallSeconds: number;
  jobsPerSecond: number;
  /** POST /jobs start → BullMQ "completed" event for that job, ms. */
  latencyMs: Summary;
  /** POST /jobs round trip alone (validate, insert row, enqueue), ms. */
  submitMs: Summary;
  /** What the service recorded on each job (GET /jobs/{id} after the phase), ms. */
  serviceTimings: { queueMs: Summary; generateMs: Summary; postprocessMs: Summary };
  /**
   * Per job: its latency less the runner's own compute for it (load + generate + post-process, as the runner timed
   * them), ms. Unlike (a) − (b) it compares a job with itself, so how fast one Python process happens to run the model
   * against another (bench.ts measures that spread with a second direct process) does not enter it.
   */
  beyondComputeMs: Summary;
  /** The per-job samples behind the summaries, for merging rows run in blocks (mergeHttpPhases); not written out. */
  raw?: Record<RawKey, number[]>;
}

type RawKey = "latencyMs" | "submitMs" | "queueMs" | "generateMs" | "postprocessMs" | "beyondComputeMs";

/** The row as written to the results file: summaries only. */
export function withoutRaw(row: HttpPhaseResult): HttpPhaseResult {
  const { raw: _raw, ...rest } = row;
  return rest;
}

/** One row from several runs of the same row (blocks alternated with other work): samples pooled, wall time summed. */
export function mergeHttpPhases(rows: HttpPhaseResult[]): HttpPhaseResult {
  const pool = (key: RawKey) => rows.flatMap((r) => r.raw?.[key] ?? []);
  const jobs = rows.reduce((n, r) => n + r.jobs, 0);
  const wallSeconds = rows.reduce((n, r) => n + r.wallSeconds, 0);
  return {
    concurrency: rows[0].concurrency,
    jobs,
    wallSeconds: round(wallSeconds, 3),
    jobsPerSecond: round(jobs / wallSeconds, 2),
    latencyMs: summarize(pool("latencyMs"), 1),
    submitMs: summarize(pool("submitMs"), 2),
    serviceTimings: {
      queueMs: summarize(pool("queueMs"), 1),
      generateMs: summarize(pool("generateMs"), 1),
      postprocessMs: summarize(pool("postprocessMs"), 1),
    },
    beyondComputeMs: summarize(pool("beyondComputeMs"), 2),
  };
}

interface JobViewLite {
  id: string;
  status: string;
  timings: { queueMs: number | null; loadMs: number | null; generateMs: number | null; postprocessMs: number | null };
  result?: { imageUrl: string; width: number; height: number };
}

/**
 * Kept-alive connections for every submit, as a client that reuses its connection (the extension's WebSocket, a
 * scripted client) has. node:http writes a small request in one go; Node 20's fetch (undici) spent about 0.9 ms more
 * per request of its own on this machine (a minimal Express route: 1.7–1.9 ms p50 against 0.8–1.0 ms), which is the
 * client's cost, not the service's.
 */
const agent = new http.Agent({ keepAlive: true });

/** POST /jobs with the tiny job; the job id, or an error naming the status (e.g. 429 if a rate limit was left on). */
export async function submit(url: string, seed: number): Promise<string> {
  const { status, body } = await postJson(`${url}/jobs`, { ...TINY_JOB, seed });
  const id = (body as { id?: unknown } | null)?.id;
  if (status !== 202 || typeof id !== "string") throw new Error(`POST /jobs answered ${status}: ${JSON.stringify(body)}`);
  return id;
}

function postJson(url: string, payload: unknown): Promise<{ status: number; body: unknown }> {
  const data = Buffer.from(JSON.stringify(payload));
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: "POST", agent, headers: { "content-type": "application/json", "content-length": data.length } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("error", reject);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) });
          } catch {
            resolve({ status: res.statusCode ?? 0, body: text });
          }
        });
      },
    );
    req.on("error", reject);
    req.end(data);
  });
}

async function view(url: string, id: string): Promise<JobViewLite> {
  const res = await fetch(`${url}/jobs/${id}`);
  if (!res.ok) throw new Error(`GET /jobs/${id} answered ${res.status}`);
  return (await res.json()) as JobViewLite;
}

/** Reads width/height from the PNG's IHDR chunk: enough to check the result without a PNG decoder in src/. */
export async function checkImage(url: string, id: string, expect: { width: number; height: number }): Promise<void> {
  const res = await fetch(`${url}/jobs/${id}/image`);
  const png = Buffer.from(await res.arrayBuffer());
  if (!res.ok || png.length < 24 || png.toString("ascii", 12, 16) !== "IHDR") throw new Error(`job ${id}: no PNG (${res.status})`);
  const [w, h] = [png.readUInt32BE(16), png.readUInt32BE(20)];
  if (w !== expect.width || h !== expect.height) throw new Error(`job ${id}: PNG is ${w}×${h}, expected ${expect.width}×${expect.height}`);
}

/**
 * Submits `jobs` tiny jobs from `concurrency` closed-loop clients: each client POSTs, waits for its job to complete,
 * then POSTs the next. With one warm runner, concurrency > 1 measures queueing, not parallel speed-up.
 */
export async function runHttpPhase(opts: {
  url: string;
  tracker: CompletionTracker;
  jobs: number;
  concurrency: number;
  seedBase: number;
  jobTimeoutMs: number;
}): Promise<HttpPhaseResult> {
  const { url, tracker, jobs, concurrency } = opts;
  const latencies: number[] = [];
  const latencyOf = new Map<string, number>();
  const submits: number[] = [];
  const ids: string[] = [];
  let next = 0;
  const client = async () => {
    for (let i = next++; i < jobs; i = next++) {
      const started = performance.now();
      const id = await submit(url, opts.seedBase + i);
      submits.push(performance.now() - started);
      ids.push(id);
      const done = await tracker.wait(id, opts.jobTimeoutMs);
      if (!done.ok) throw new Error(`job ${id} failed: ${done.detail}`);
      latencies.push(done.at - started);
      latencyOf.set(id, done.at - started);
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, jobs) }, client));
  const wallMs = performance.now() - started;

  // Outside the timed window: confirm every job really completed and collect what the service itself measured.
  const views: JobViewLite[] = [];
  for (const id of ids) views.push(await view(url, id));
  const notDone = views.filter((v) => v.status !== "completed");
  if (notDone.length) throw new Error(`${notDone.length} jobs did not complete: ${notDone.map((v) => `${v.id}=${v.status}`).join(", ")}`);
  await checkImage(url, ids[0], TINY_JOB.pixel);
  const samples = (key: keyof JobViewLite["timings"]) => views.map((v) => v.timings[key] ?? Number.NaN).filter(Number.isFinite);
  const timing = (key: keyof JobViewLite["timings"]) => summarize(samples(key), 1);
  const beyondCompute = views.map((v) => latencyOf.get(v.id)! - ((v.timings.loadMs ?? 0) + (v.timings.generateMs ?? 0) + (v.timings.postprocessMs ?? 0)));
  return {
    concurrency,
    jobs,
    wallSeconds: round(wallMs / 1000, 3),
    jobsPerSecond: round(jobs / (wallMs / 1000), 2),
    latencyMs: summarize(latencies, 1),
    submitMs: summarize(submits, 2),
    serviceTimings: { queueMs: timing("queueMs"), generateMs: timing("generateMs"), postprocessMs: timing("postprocessMs") },
    beyondComputeMs: summarize(beyondCompute, 2),
    raw: {
      latencyMs: latencies,
      submitMs: submits,
      queueMs: samples("queueMs"),
      generateMs: samples("generateMs"),
      postprocessMs: samples("postprocessMs"),
      beyondComputeMs: beyondCompute,
    },
  };
}
