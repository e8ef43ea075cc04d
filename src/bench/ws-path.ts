import WebSocket from "ws";
import { HttpPhaseResult, TINY_JOB } from "./http-path";
import { round, summarize } from "./stats";

/**
 * (g) The Aseprite extension's own path: one WebSocket, a `submit` frame per job (the extension's shape: a requestId
 * that is also the job's idempotencyKey, aseprite/extension/client.lua), `accepted`, then the `completed` frame with
 * the picture's raw RGBA in it, which is when the artist can have the layer. The same tiny job as (a), one job at a
 * time. The row has (a)'s shape: `submitMs` is submit → `accepted`, `latencyMs` submit → `completed`.
 */
export async function runWsPhase(opts: { url: string; jobs: number; seedBase: number; jobTimeoutMs: number }): Promise<HttpPhaseResult> {
  const socket = new WebSocket(`${opts.url.replace(/^http/, "ws")}/ws`);
  await new Promise<void>((resolve, reject) => {
    socket.once("open", () => resolve());
    socket.once("error", reject);
  });
  const frames = new FrameWaiter(socket);
  const latencies: number[] = [];
  const accepts: number[] = [];
  const latencyOf = new Map<string, number>();
  const started = performance.now();
  try {
    for (let i = 0; i < opts.jobs; i++) {
      const requestId = `bench-ws-${opts.seedBase + i}-${Date.now()}`;
      const sent = performance.now();
      const job = { ...TINY_JOB, seed: opts.seedBase + i, idempotencyKey: requestId };
      socket.send(JSON.stringify({ type: "submit", requestId, job }));
      const accepted = await frames.next((f) => f.requestId === requestId, opts.jobTimeoutMs);
      if (accepted.type !== "accepted" || typeof accepted.id !== "string") throw new Error(`submit answered ${JSON.stringify(accepted)}`);
      accepts.push(performance.now() - sent);
      const id = accepted.id;
      const final = await frames.next((f) => f.id === id && f.type !== "progress", opts.jobTimeoutMs);
      const at = performance.now();
      checkCompleted(final);
      latencies.push(at - sent);
      latencyOf.set(id, at - sent);
    }
  } finally {
    socket.close();
  }
  const wallMs = performance.now() - started;

  // Outside the timed window: what the runner itself measured for each job.
  const beyondCompute: number[] = [];
  const samples: Record<"queueMs" | "generateMs" | "postprocessMs", number[]> = { queueMs: [], generateMs: [], postprocessMs: [] };
  for (const [id, latency] of latencyOf) {
    const res = await fetch(`${opts.url}/jobs/${id}`);
    const view = (await res.json()) as { timings: Record<string, number | null> };
    const t = view.timings;
    beyondCompute.push(latency - ((t.loadMs ?? 0) + (t.generateMs ?? 0) + (t.postprocessMs ?? 0)));
    for (const key of ["queueMs", "generateMs", "postprocessMs"] as const) if (typeof t[key] === "number") samples[key].push(t[key]!);
  }
  return {
    concurrency: 1,
    jobs: opts.jobs,
    wallSeconds: round(wallMs / 1000, 3),
    jobsPerSecond: round(opts.jobs / (wallMs / 1000), 2),
    latencyMs: summarize(latencies, 1),
    submitMs: summarize(accepts, 2),
    serviceTimings: {
      queueMs: summarize(samples.queueMs, 1),
      generateMs: summarize(samples.generateMs, 1),
      postprocessMs: summarize(samples.postprocessMs, 1),
    },
    beyondComputeMs: summarize(beyondCompute, 2),
    raw: { latencyMs: latencies, submitMs: accepts, ...samples, beyondComputeMs: beyondCompute },
  };
}

type Frame = Record<string, unknown>;

/** The picture the extension places: the pixel grid's size, its RGBA complete. */
function checkCompleted(frame: Frame): void {
  if (frame.type !== "completed") throw new Error(`job ended ${JSON.stringify(frame).slice(0, 300)}`);
  const { width, height } = TINY_JOB.pixel;
  const rgba = Buffer.from(String(frame.rgbaBase64), "base64");
  if (frame.width !== width || frame.height !== height || rgba.length !== width * height * 4) {
    throw new Error(`completed frame is ${frame.width}×${frame.height} with ${rgba.length} RGBA bytes, expected ${width}×${height}`);
  }
}

/** Frames in arrival order, each handed to the first waiter it matches (the one in-flight job's, here). */
class FrameWaiter {
  private readonly waiting: Array<{ match: (f: Frame) => boolean; resolve: (f: Frame) => void }> = [];

  constructor(socket: WebSocket) {
    socket.on("message", (data) => {
      const frame = JSON.parse(data.toString()) as Frame;
      const at = this.waiting.findIndex((w) => w.match(frame));
      if (at >= 0) this.waiting.splice(at, 1)[0].resolve(frame);
    });
  }

  next(match: (f: Frame) => boolean, timeoutMs: number): Promise<Frame> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching frame within ${timeoutMs} ms`)), timeoutMs);
      this.waiting.push({
        match,
        resolve: (f) => {
          clearTimeout(timer);
          resolve(f);
        },
      });
    });
  }
}
