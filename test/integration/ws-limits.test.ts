import { monitorEventLoopDelay, performance, PerformanceObserver } from "node:perf_hooks";
import { PNG } from "pngjs";
import request from "supertest";
import WebSocket from "ws";
import { finishedJob, submitJob } from "../support/jobs-client";
import { startTestStack, TestStack, waitFor } from "../support/stack";
import { startFlood } from "../support/ws-flood";

/**
 * Issue 11, finding 1: `subscribe` to a finished 1024×1024 job made the API decode, base64 and queue ~5.6 MB per frame,
 * unbounded. The service runs in this process (test/support/stack.ts), so its RSS and event loop are this process's;
 * the flooding clients run in child processes (test/support/ws-flood.ts) so their own work is not counted.
 */

type Frame = Record<string, any>;
const MB = 1024 * 1024;
/**
 * A short lock (the default is 30 s), renewed every LOCK_MS / 2: an event loop held that long by API work would make
 * the job stall. Before the fix this flood held the loop for 15–21 s at a time.
 */
const LOCK_MS = 4_000;

let stack: TestStack;
let wsUrl: string;
let bigId: string;
/** Byte length of the big job's `completed` frame: 1024 × 1024 × 4 bytes in base64, plus the JSON around it. */
let bigFrameBytes: number;

/** A 1024×1024 picture of noise in 2×2 blocks: a PNG that is slow to decode, as real results are. */
function noisePng(size: number): Buffer {
  const image = new PNG({ width: size, height: size });
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) & 255;
  for (let y = 0; y < size; y += 2) {
    for (let x = 0; x < size; x += 2) {
      const [r, g, b] = [rand(), rand(), rand()];
      for (const [dx, dy] of [
        [0, 0],
        [1, 0],
        [0, 1],
        [1, 1],
      ]) {
        const i = ((y + dy) * size + x + dx) * 4;
        image.data.set([r, g, b, 255], i);
      }
    }
  }
  return PNG.sync.write(image, { colorType: 2 });
}

beforeAll(async () => {
  stack = await startTestStack({
    // the floods here must meet the memory and buffer limits, not the frame budget (that has its own stack below)
    PIXELAI_WS_RATE_LIMIT_PER_MIN: "0",
    PIXELAI_LOCK_DURATION_MS: String(LOCK_MS),
    PIXELAI_STALLED_INTERVAL_MS: "1000",
  });
  wsUrl = stack.url.replace(/^http/, "ws") + "/ws";
  // a finished large job, cheaply: an input image through the pixel post-processing only, at its own size
  bigId = await submitJob(stack.url, {
    inputImage: noisePng(1024).toString("base64"),
    pixel: { width: 1024, height: 1024, grid: "fixed", colors: 0 },
  });
  const job = await finishedJob(stack.url, bigId);
  expect(job).toMatchObject({ status: "completed", result: { width: 1024, height: 1024 } });
  bigFrameBytes = Math.ceil((1024 * 1024 * 4) / 3) * 4;
});

afterAll(async () => {
  await stack?.close();
});

/** GET /health one after another until stop(); the latency of each, in ms. */
function probeHealth(): { stop(): Promise<number[]> } {
  const latencies: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const t0 = performance.now();
      const res = await request(stack.url).get("/health");
      latencies.push(performance.now() - t0);
      expect(res.status).toBe(200);
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return latencies;
    },
  };
}

/** Largest RSS seen (sampled every 10 ms) until stop(). */
function sampleRss(): { stop(): number } {
  let peak = process.memoryUsage().rss;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
  return {
    stop: () => {
      clearInterval(timer);
      return Math.max(peak, process.memoryUsage().rss);
    },
  };
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil(sorted.length * p) - 1)];
}

const p99 = (values: number[]) => percentile(values, 0.99);

/** How /health answers on this machine now, with no flood: the tests print it beside their own numbers. */
async function healthBaseline(): Promise<string> {
  const probe = probeHealth();
  await new Promise((r) => setTimeout(r, 2_000));
  const latencies = await probe.stop();
  return `baseline /health p50 ${percentile(latencies, 0.5).toFixed(1)} ms, p99 ${p99(latencies).toFixed(1)} ms over ${latencies.length}`;
}

const subscribes = (n: number, id: string) => Array.from({ length: n }, () => ({ type: "subscribe", id }));

describe("subscribe floods on a finished 1024×1024 job", () => {
  it("60 subscribes from a client that never reads: RSS within +100 MB, /health p99 under 200 ms, the client cut off", async () => {
    console.log(await healthBaseline());
    const rssBefore = process.memoryUsage().rss;
    const rss = sampleRss();
    const health = probeHealth();
    const flood = startFlood(wsUrl, subscribes(60, bigId), { mode: "paused" });
    try {
      await waitFor(async () => stack.service.ws!.clientCount() === 1, 10_000, 5);
      // its answers wait for it to read down to half of PIXELAI_WS_MAX_BUFFERED_MB; it reads nothing for 10 s, so the
      // server closes it (4008), and as it never reads the close either, drops the socket when the close grace ends
      await waitFor(async () => stack.service.ws!.clientCount() === 0, 60_000, 20);
    } finally {
      flood.stop();
    }
    const latencies = await health.stop();
    const peak = rss.stop();
    await flood.done;
    const grew = (peak - rssBefore) / MB;
    console.log(
      `60-subscribe flood, never reading: RSS ${Math.round(rssBefore / MB)} → peak ${Math.round(peak / MB)} MB (+${grew.toFixed(1)}); ` +
        `/health p50 ${percentile(latencies, 0.5).toFixed(1)} ms, p99 ${p99(latencies).toFixed(1)} ms, max ${Math.max(...latencies).toFixed(1)} ms over ${latencies.length}`,
    );
    expect(latencies.length).toBeGreaterThan(20);
    expect(grew).toBeLessThan(100);
    expect(p99(latencies)).toBeLessThan(200);
    // it was served, once: the encoded frame is in the cache, and only one copy of it
    expect(stack.service.ws!.finalFrames.size()).toBeGreaterThan(bigFrameBytes);
    expect(stack.service.ws!.finalFrames.size()).toBeLessThan(2 * bigFrameBytes);
  });

  it("40 subscribes from a client that reads, six times over: 40 identical completed frames each, /health p99 under 1 s", async () => {
    // six rounds one after another: one takes ~1.5 s here; under 100 /health samples a p99 would be just the maximum
    const health = probeHealth();
    const reports = [];
    for (let round = 0; round < 6; round++)
      reports.push(await startFlood(wsUrl, subscribes(40, bigId), { mode: "reading", want: 40 }).done);
    const latencies = await health.stop();
    console.log(
      `6 × 40-subscribe flood, reading: /health p50 ${percentile(latencies, 0.5).toFixed(1)} ms, p95 ${percentile(latencies, 0.95).toFixed(1)} ms, p99 ${p99(latencies).toFixed(1)} ms, ` +
        `max ${Math.max(...latencies).toFixed(1)} ms over ${latencies.length}`,
    );
    for (const report of reports) {
      expect(report.count).toBe(40);
      const sizes = Object.entries(report.sizes);
      expect(sizes).toHaveLength(1);
      const [bytes, { n, head }] = sizes[0];
      expect(n).toBe(40);
      expect(Number(bytes)).toBeGreaterThan(bigFrameBytes);
      expect(head).toBe(`{"type":"completed","id":"${bigId}","width":1024,"height":1024,"rgbaBase64":"`.slice(0, 60));
    }
    expect(latencies.length).toBeGreaterThan(100);
    // Before the fix one such round held /health for 15 s. A reader this fast (≈ 100 MB/s of frames, all copied into
    // the socket by this process) shares this machine's 2 cores with the service, the runner and the reader itself:
    // measured here p95 170 ms and p99 290 ms at load ≈ 7, so the bound for this case is 1 s, not the 200 ms the
    // never-reading flood above keeps.
    expect(p99(latencies)).toBeLessThan(1_000);
  });

  it("closes a client whose unread frames pass the bound with 4008, after the frames it was sent", async () => {
    const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const socket = (ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    socket.pause();
    let completed = 0;
    ws.on("message", (data: Buffer) => {
      if (data.subarray(0, 20).toString() === '{"type":"completed",') completed += 1;
    });
    const closed = new Promise<{ code: number; reason: string }>((resolve) =>
      ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    for (const f of subscribes(30, bigId)) ws.send(JSON.stringify(f));
    // the server answers until half the bound is unread, waits SEND_STALL_MS (10 s) for the client to read, and closes
    await new Promise((r) => setTimeout(r, 12_000));
    socket.resume();
    const { code, reason } = await closed;
    expect(code).toBe(4008);
    expect(reason).toMatch(/not reading/);
    // it got whole frames up to half the bound (16 MiB ≈ 3 of these, plus what the sockets held), not all 30
    expect(completed).toBeGreaterThanOrEqual(1);
    expect(completed).toBeLessThan(30);
  });

  it("closes at once (4008) a client whose own frames pile up unhandled past the bound while its answers wait", async () => {
    const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const socket = (ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    socket.pause();
    const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)));
    const t0 = performance.now();
    // answers to these fill half the bound, so the frames after them wait: 600 × 60 KB (extra envelope fields are
    // tolerated) is 36 MB of frames waiting, past the 32 MiB bound long before the 10 s stall would close it
    for (const f of subscribes(10, bigId)) ws.send(JSON.stringify(f));
    const padded = JSON.stringify({ type: "engines", pad: "x".repeat(60_000) });
    for (let i = 0; i < 600; i++) ws.send(padded);
    await waitFor(async () => stack.service.ws!.clientCount() === 1, 5_000, 5);
    await new Promise((r) => setTimeout(r, 3_000));
    socket.resume();
    expect(await closed).toBe(4008);
    // the close frame was queued well before the stall's 10 s (and the 10 s grace after it) had passed
    expect(performance.now() - t0).toBeLessThan(10_000);
  });
});

describe("the worker beside the API (as under `make start`)", () => {
  it("keeps renewing its job's lock while the API is flooded: the job completes, never stalled", async () => {
    const events = stack.service.queue.events();
    const stalled: string[] = [];
    events.on("stalled", ({ jobId }) => stalled.push(jobId));
    await events.waitUntilReady();
    const loop = monitorEventLoopDelay({ resolution: 10 });
    // printed beside the loop's delay, to tell the collector's pauses from the machine's (shared) scheduling
    let longestGcMs = 0;
    const gc = new PerformanceObserver((list) => list.getEntries().forEach((e) => (longestGcMs = Math.max(longestGcMs, e.duration))));
    try {
      const id = await submitJob(stack.url, { prompt: "a castle", width: 128, height: 128, steps: 30, seed: 5 });
      await waitFor(async () => ((await request(stack.url).get(`/jobs/${id}`)).body.status === "active" ? true : undefined), 60_000, 20);
      loop.enable();
      gc.observe({ entryTypes: ["gc"] });
      // five connections at once: three reading 40 big frames each, one that never reads, one asking for engines
      const floods = [
        ...[1, 2, 3].map(() => startFlood(wsUrl, subscribes(40, bigId), { mode: "reading", want: 40 })),
        startFlood(wsUrl, subscribes(60, bigId), { mode: "paused" }),
        startFlood(
          wsUrl,
          Array.from({ length: 100 }, () => ({ type: "engines" })),
          { mode: "reading", want: 100 },
        ),
      ];
      const activeDuring = await Promise.all(floods.filter((_, i) => i !== 3).map((f) => f.done));
      const stillActive = (await request(stack.url).get(`/jobs/${id}`)).body.status === "active";
      floods[3].stop();
      await floods[3].done;
      // generous: on this shared machine the runner's steps slow down a lot under others' load
      const job = await finishedJob(stack.url, id, 300_000);
      loop.disable();
      const maxLagMs = loop.max / 1e6;
      console.log(
        `flood beside a running job: event loop max delay ${maxLagMs.toFixed(1)} ms, p99 ${(loop.percentile(99) / 1e6).toFixed(1)} ms, ` +
          `longest GC pause ${longestGcMs.toFixed(1)} ms; stalled: ${JSON.stringify(stalled)}; ` +
          `job still active after the flood: ${stillActive}`,
      );
      expect(activeDuring.map((r) => r.count)).toEqual([40, 40, 40, 100]);
      expect(job.status).toBe("completed");
      expect(stalled).toEqual([]);
      // a renewal is due every LOCK_MS / 2 and the lock lasts LOCK_MS: a renewal late by less than LOCK_MS / 2 still
      // lands in time (the margin left is the machine's: this one is shared, so its scheduling adds to the delay)
      expect(maxLagMs).toBeLessThan(LOCK_MS / 2);
    } finally {
      loop.disable();
      gc.disconnect();
      await events.close();
    }
  });
});

describe("caps and budgets (API only: submitted jobs stay queued)", () => {
  let api: TestStack;
  let url: string;

  beforeAll(async () => {
    api = await startTestStack(
      { PIXELAI_WS_MAX_CONNECTIONS_PER_CLIENT: "2", PIXELAI_WS_MAX_WATCHES: "3", PIXELAI_WS_RATE_LIMIT_PER_MIN: "6" },
      { api: true, worker: false },
    );
    url = api.url.replace(/^http/, "ws") + "/ws";
  });

  afterAll(async () => {
    await api?.close();
  });

  /** A client that records every frame and how it was closed. */
  async function open(): Promise<{ ws: WebSocket; frames: Frame[]; closed: Promise<number> }> {
    const ws = new WebSocket(url);
    const frames: Frame[] = [];
    ws.on("message", (d) => frames.push(JSON.parse(d.toString())));
    const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)));
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    return { ws, frames, closed };
  }

  async function next(c: { frames: Frame[] }, pred: (f: Frame) => boolean, from = 0): Promise<Frame> {
    return waitFor(async () => c.frames.slice(from).find(pred), 10_000, 10);
  }

  it("refuses a third connection from one client with TOO_MANY_CONNECTIONS and close code 4029", async () => {
    const a = await open();
    const b = await open();
    const c = await open();
    expect(await c.closed).toBe(4029);
    expect(c.frames).toEqual([{ type: "error", code: "TOO_MANY_CONNECTIONS", message: expect.stringMatching(/limit is 2/) }]);
    expect(a.ws.readyState).toBe(WebSocket.OPEN);
    a.ws.close();
    await a.closed;
    await waitFor(async () => api.service.ws!.clientCount() === 1, 5_000);
    const d = await open(); // a slot was freed
    await new Promise((r) => setTimeout(r, 200));
    expect(d.ws.readyState).toBe(WebSocket.OPEN);
    for (const x of [b, d]) x.ws.close();
    await Promise.all([b.closed, d.closed]);
  });

  it("follows at most 3 jobs per connection: a 4th submit or subscribe gets TOO_MANY_WATCHES; the connection stays", async () => {
    const c = await open();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      c.ws.send(JSON.stringify({ type: "submit", requestId: `w${i}`, job: { prompt: `job ${i}`, width: 64, height: 64, steps: 2 } }));
      ids.push((await next(c, (f) => f.requestId === `w${i}`)).id);
    }
    const before = (await request(api.url).get("/jobs?limit=100")).body.items.length;
    c.ws.send(JSON.stringify({ type: "submit", requestId: "w3", job: { prompt: "one too many", width: 64, height: 64, steps: 2 } }));
    expect(await next(c, (f) => f.requestId === "w3")).toMatchObject({ type: "error", code: "TOO_MANY_WATCHES", requestId: "w3" });
    expect((await request(api.url).get("/jobs?limit=100")).body.items.length).toBe(before); // nothing queued for it

    const other = await submitJob(api.url, { prompt: "elsewhere", width: 64, height: 64, steps: 2 });
    c.ws.send(JSON.stringify({ type: "subscribe", id: other }));
    expect(await next(c, (f) => f.id === other)).toMatchObject({ type: "error", code: "TOO_MANY_WATCHES", id: other });
    expect(c.ws.readyState).toBe(WebSocket.OPEN);

    // a cancel of a followed job frees its slot, and the subscribe then goes through: its job's final frame comes
    c.ws.send(JSON.stringify({ type: "cancel", id: ids[0] }));
    await next(c, (f) => f.type === "cancelled" && f.id === ids[0]);
    const from = c.frames.length;
    c.ws.send(JSON.stringify({ type: "subscribe", id: other }));
    await new Promise((r) => setTimeout(r, 300));
    expect((await request(api.url).post(`/jobs/${other}/cancel`)).status).toBeLessThan(300);
    expect(await next(c, (f) => f.id === other, from)).toEqual({ type: "cancelled", id: other });
    c.ws.close();
    await c.closed;
  });

  it("gives subscribe and engines frames one budget per client (6 a minute here), apart from submissions", async () => {
    const c = await open();
    // earlier tests spent some of the budget on subscribes (and it refills by one every 10 s): at most 6 go through
    for (let i = 0; i < 10; i++) c.ws.send(JSON.stringify({ type: "engines" }));
    await waitFor(async () => c.frames.length === 10, 10_000, 10);
    const served = c.frames.filter((f) => f.type === "engines").length;
    expect(served).toBeGreaterThanOrEqual(1);
    expect(served).toBeLessThanOrEqual(6);
    // answered in order: the budget's frames first, then only refusals
    for (const f of c.frames.slice(served)) {
      expect(f).toMatchObject({
        type: "error",
        code: "RATE_LIMITED",
        message: expect.stringMatching(/subscribe and engines frames.*6 per minute/),
      });
    }
    const id = await submitJob(api.url, { prompt: "budget", width: 64, height: 64, steps: 2 });
    c.ws.send(JSON.stringify({ type: "subscribe", id }));
    expect(await next(c, (f) => f.id === id)).toMatchObject({ type: "error", code: "RATE_LIMITED", id });
    c.ws.send(JSON.stringify({ type: "submit", requestId: "still", job: { prompt: "still allowed", width: 64, height: 64, steps: 2 } }));
    expect(await next(c, (f) => f.requestId === "still")).toMatchObject({ type: "accepted" });
    c.ws.close();
    await c.closed;
  });
});
