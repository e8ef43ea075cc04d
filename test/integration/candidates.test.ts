import fs from "node:fs";
import request from "supertest";
import WebSocket from "ws";
import { JobsRepository } from "../../src/jobs/jobs.repository";
import { decodePng, startTestStack, TestStack, waitFor } from "../support/stack";
import { fetchPng, finishedJob, submitJob } from "../support/jobs-client";
import { privateModelStore } from "../support/model-store";
import { SseStream } from "../support/sse";

/** `count` candidates per job through the real stack: both runners, SQLite, Redis, REST, /ws and SSE. */
const KEY = "test-admin-key";
// exactly one 64×64, 3-step job of 4 candidates: a fifth candidate is over the bound
const MAX_PIXEL_STEPS = 64 * 64 * 3 * 4;
let stack: TestStack;
let fixtures: string;

beforeAll(async () => {
  const store = privateModelStore("pixelai-candidates-");
  fixtures = store.root;
  stack = await startTestStack({
    PIXELAI_MODELS_DIR: store.modelsDir,
    PIXELAI_LORAS_DIR: store.lorasDir,
    PIXELAI_API_KEY: KEY,
    PIXELAI_MAX_PIXEL_STEPS: String(MAX_PIXEL_STEPS),
  });
  // the MLX engine runs converted models only
  const conversion = await request(stack.url).post("/models/tiny-sd/conversions").set("X-API-Key", KEY).send({ dtype: "float32" });
  expect([200, 202]).toContain(conversion.status);
  await waitFor(async () => {
    const r = await request(stack.url).get(`/conversions/${conversion.body.id}`);
    return r.body.status === "completed";
  });
});

afterAll(async () => {
  await stack?.close();
  fs.rmSync(fixtures, { recursive: true, force: true });
});

const job = {
  prompt: "a knight",
  width: 64,
  height: 64,
  steps: 3,
  seed: 40,
  initNoise: "torch",
  pixel: { width: 32, height: 32, colors: 16 },
};

async function candidatePng(id: string, n: number | string): Promise<request.Response> {
  return request(stack.url)
    .get(`/jobs/${id}/images/${n}`)
    .buffer(true)
    .parse((r, cb) => {
      const chunks: Buffer[] = [];
      r.on("data", (c: Buffer) => chunks.push(c));
      r.on("end", () => cb(null, Buffer.concat(chunks)));
    });
}

const pixels = (png: Buffer) => decodePng(png).data;

describe.each(["torch", "mlx"])("count on the %s engine", (engine) => {
  it("count 4 makes 4 different images; the first is the count 1 image of the same seed, each candidate i the one of seed + i", async () => {
    const many = await finishedJob(stack.url, await submitJob(stack.url, { ...job, engine, count: 4 }));
    const one = await finishedJob(stack.url, await submitJob(stack.url, { ...job, engine }));
    const third = await finishedJob(stack.url, await submitJob(stack.url, { ...job, engine, seed: 42 }));
    expect([many.status, one.status, third.status]).toEqual(["completed", "completed", "completed"]);
    expect(many.result.images).toEqual(
      [0, 1, 2, 3].map((index) =>
        expect.objectContaining({ index, seed: 40 + index, width: 32, height: 32, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) }),
      ),
    );
    expect(one.result.images).toEqual([expect.objectContaining({ index: 0, seed: 40, sha256: expect.any(String) })]);

    const pngs: Buffer[] = [];
    for (let n = 0; n < 4; n++) {
      const res = await candidatePng(many.id, n);
      expect([res.status, res.headers["content-type"]]).toEqual([200, "image/png"]);
      pngs.push(res.body as Buffer);
    }
    expect(new Set(pngs.map((p) => pixels(p).toString("base64"))).size).toBe(4);
    expect(pixels(await fetchPng(stack.url, many.id))).toEqual(pixels(pngs[0]));
    // after pixelization the batched candidate is exactly the single job's image (docs/design.md "Candidates")
    expect(pixels(pngs[0])).toEqual(pixels(await fetchPng(stack.url, one.id)));
    expect(pixels(pngs[2])).toEqual(pixels(await fetchPng(stack.url, third.id)));

    const past = await request(stack.url).get(`/jobs/${many.id}/images/4`);
    expect(past.status).toBe(404);
    expect(past.body.error).toMatchObject({ code: "NOT_FOUND", details: { count: 4 } });
    expect((await request(stack.url).get(`/jobs/${one.id}/images/1`)).status).toBe(404);
    expect((await request(stack.url).get(`/jobs/${many.id}/images/-1`)).body.error.code).toBe("NOT_FOUND");
    expect((await request(stack.url).get(`/jobs/${many.id}/images/one`)).body.error.code).toBe("INVALID_REQUEST");
  });
});

describe("candidates on /ws and SSE", () => {
  it("progress frames carry one preview per candidate; the completed frame carries every candidate's RGBA", async () => {
    const ws = new WebSocket(stack.url.replace(/^http/, "ws") + "/ws");
    const frames: Record<string, any>[] = [];
    ws.on("message", (data) => frames.push(JSON.parse(data.toString("utf8"))));
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    try {
      ws.send(JSON.stringify({ type: "submit", requestId: "r1", job: { ...job, count: 4, previewEvery: 1, pixel: undefined } }));
      const accepted = await waitFor(async () => frames.find((f) => f.type === "accepted"));
      const completed = await waitFor(async () => frames.find((f) => f.type === "completed" && f.id === accepted.id));
      const progress = frames.filter((f) => f.type === "progress" && f.id === accepted.id && f.preview);
      expect(progress.length).toBeGreaterThan(0);
      for (const p of progress) {
        expect(p.previews).toHaveLength(4);
        expect(p.previews[0]).toEqual(p.preview);
        for (const c of p.previews) expect(Buffer.from(c.rgbaBase64, "base64").length).toBe(c.width * c.height * 4);
      }
      expect(completed.candidates.map((c: { index: number; seed: number }) => [c.index, c.seed])).toEqual([
        [0, 40],
        [1, 41],
        [2, 42],
        [3, 43],
      ]);
      expect(completed.candidates[0].rgbaBase64).toBe(completed.rgbaBase64);
      expect([completed.width, completed.height, completed.seed]).toEqual([64, 64, 40]);
      for (let n = 0; n < 4; n++) {
        const png = (await candidatePng(accepted.id, n)).body as Buffer;
        expect(Buffer.from(completed.candidates[n].rgbaBase64, "base64")).toEqual(pixels(png));
      }
      // a count 1 job's frame stays as it was
      ws.send(JSON.stringify({ type: "submit", requestId: "r2", job: { ...job, seed: 7 } }));
      const single = await waitFor(async () => frames.find((f) => f.type === "accepted" && f.requestId === "r2"));
      const done = await waitFor(async () => frames.find((f) => f.type === "completed" && f.id === single.id));
      expect(done.candidates).toBeUndefined();
    } finally {
      ws.close();
    }
  });

  it("SSE preview events carry every candidate's preview", async () => {
    // queued behind another job (one worker slot), so the stream is open before its first step
    const before = await submitJob(stack.url, { ...job, count: 4, seed: 77 });
    const id = await submitJob(stack.url, { ...job, count: 2, steps: 6, previewEvery: 1 });
    const sse = new SseStream(`${stack.url}/jobs/${id}/events?preview=true`);
    await sse.done;
    const previews = sse.events.filter((e) => e.event === "preview");
    expect(sse.events.at(-1)?.event).toBe("completed");
    // the stream may join after the first steps went by; the ones it saw have both candidates
    expect(previews.length).toBeGreaterThan(0);
    expect((await finishedJob(stack.url, before)).status).toBe("completed");
    for (const p of previews) {
      expect(p.data.previews).toHaveLength(2);
      expect(p.data.previews[0].pngBase64).toBe(p.data.pngBase64);
    }
  });
});

describe("fair use, retention and delete", () => {
  it("count multiplies the job's cost: 4 candidates fit the bound, 5 are JOB_TOO_LARGE; count outside 1..8 is INVALID_REQUEST", async () => {
    const over = await request(stack.url)
      .post("/jobs")
      .send({ ...job, count: 5 });
    expect(over.status).toBe(400);
    expect(over.body.error).toMatchObject({
      code: "JOB_TOO_LARGE",
      details: { pixelSteps: 64 * 64 * 3 * 5, maxPixelSteps: MAX_PIXEL_STEPS },
    });
    for (const count of [0, 9, 1.5]) {
      const bad = await request(stack.url)
        .post("/jobs")
        .send({ ...job, steps: 1, count });
      expect([count, bad.status, bad.body.error.code]).toEqual([count, 400, "INVALID_REQUEST"]);
    }
    const pixelize = await request(stack.url)
      .post("/jobs")
      .send({
        inputImage: (await fetchPng(stack.url, (await request(stack.url).get("/jobs?limit=1")).body.items[0].id)).toString("base64"),
        pixel: { width: 8, height: 8 },
        count: 2,
      });
    expect(pixelize.status).toBe(400);
    expect(pixelize.body.error.details.fields).toEqual(["count"]);
  });

  it("retention clears every candidate's bytes; DELETE removes them with the job", async () => {
    const done = await finishedJob(stack.url, await submitJob(stack.url, { ...job, count: 3, seed: 5 }));
    const rows = () => stack.service.db.jobImage.findMany({ where: { jobId: done.id }, orderBy: { index: "asc" } });
    expect((await rows()).map((r) => [r.index, r.png !== null])).toEqual([
      [1, true],
      [2, true],
    ]);
    expect(await new JobsRepository(stack.service.db).pruneImages([done.id])).toBe(1);
    expect((await rows()).map((r) => r.png)).toEqual([null, null]);
    const view = (await request(stack.url).get(`/jobs/${done.id}`)).body;
    expect(view.result.pruned).toBe(true);
    expect(view.result.images.map((i: { sha256?: string }) => i.sha256)).toEqual([undefined, undefined, undefined]);
    expect((await request(stack.url).get(`/jobs/${done.id}/images/2`)).body.error).toMatchObject({
      code: "NOT_FOUND",
      details: { pruned: true },
    });

    const other = await finishedJob(stack.url, await submitJob(stack.url, { ...job, count: 2, seed: 9 }));
    expect((await request(stack.url).delete(`/jobs/${other.id}`).set("X-API-Key", KEY)).status).toBe(204);
    expect(await stack.service.db.jobImage.count({ where: { jobId: other.id } })).toBe(0);
  });
});
