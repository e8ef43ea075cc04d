import request from "supertest";
import WebSocket from "ws";
import { startTestStack, TestStack, waitFor } from "../support/stack";
import { finishedJob, submitJob } from "../support/jobs-client";

/** What the pixel-art post-processing did, as GET /jobs/{id} reports it (result.pixel). */
let stack: TestStack;

beforeAll(async () => {
  stack = await startTestStack();
});

afterAll(async () => {
  await stack?.close();
});

const FITS = /^(native|fixed|nearest from \d+x\d+)$/;

describe("the pixel report in job results", () => {
  it("a job with pixel grid auto shows the grid step's report in GET /jobs/{id}, and the history lists it too", async () => {
    const id = await submitJob(stack.url, {
      prompt: "a knight",
      width: 64,
      height: 64,
      steps: 3,
      seed: 11,
      removeBackground: "color-key",
      pixel: { width: 32, height: 32, colors: 8, grid: "auto" },
    });
    const job = await finishedJob(stack.url, id);
    expect(job.status).toBe("completed");
    const grid = job.result.pixel.grid;
    expect(grid.mode).toBe("auto");
    expect(grid.fit).toMatch(FITS);
    expect(grid.confidence).toBeGreaterThanOrEqual(0);
    expect(grid.confidence).toBeLessThanOrEqual(1);
    // The tiny model paints noise: a grid may or may not be found; when one is, it is described in full.
    if (grid.fit !== "fixed") {
      expect(grid.cells).toHaveLength(2);
      expect(grid.pitch).toHaveLength(2);
      expect(grid.phase).toHaveLength(2);
    }
    expect(job.result.pixel.background.colour).toHaveLength(3);
    expect(job.result.pixel.background.tolerance).toBeGreaterThan(0);
    const listed = await request(stack.url).get("/jobs?limit=5");
    expect(listed.body.items.find((j: { id: string }) => j.id === id).result.pixel).toEqual(job.result.pixel);
  });

  it("grid fixed says so; a job without a pixel spec has no report", async () => {
    const fixed = await submitJob(stack.url, {
      prompt: "a knight",
      width: 64,
      height: 64,
      steps: 2,
      seed: 1,
      pixel: { width: 16, height: 16, grid: "fixed" },
    });
    const plain = await submitJob(stack.url, { prompt: "a knight", width: 64, height: 64, steps: 2, seed: 1 });
    expect((await finishedJob(stack.url, fixed)).result.pixel).toEqual({ grid: { mode: "fixed" } });
    const plainJob = await finishedJob(stack.url, plain);
    expect(plainJob.status).toBe("completed");
    expect(plainJob.result.pixel).toBeUndefined();
  });

  it("the /ws completed frame carries the same report", async () => {
    const ws = new WebSocket(stack.url.replace(/^http/, "ws") + "/ws");
    const frames: Record<string, any>[] = [];
    ws.on("message", (data) => frames.push(JSON.parse(data.toString("utf8"))));
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    try {
      const job = { prompt: "a knight", width: 64, height: 64, steps: 2, seed: 5, pixel: { width: 16, height: 16 } };
      ws.send(JSON.stringify({ type: "submit", requestId: "r1", job }));
      const accepted = await waitFor(async () => frames.find((f) => f.type === "accepted"));
      const completed = await waitFor(async () => frames.find((f) => f.type === "completed" && f.id === accepted.id));
      const view = (await request(stack.url).get(`/jobs/${accepted.id}`)).body;
      expect(completed.pixel).toEqual(view.result.pixel);
      expect(completed.pixel.grid.mode).toBe("auto");
    } finally {
      ws.close();
    }
  });
});
