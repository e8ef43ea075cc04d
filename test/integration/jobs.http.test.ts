import request from "supertest";
import { createHash } from "node:crypto";
import { startTestStack, TestStack, waitFor, decodePng, opaqueColours } from "../support/stack";
import { fetchPng, finishedJob, submitJob } from "../support/jobs-client";

let stack: TestStack;

beforeAll(async () => {
  stack = await startTestStack();
});

afterAll(async () => {
  await stack?.close();
});

const submit = (body: Record<string, unknown>) => submitJob(stack.url, body);
const finished = (id: string) => finishedJob(stack.url, id);
const imageOf = (id: string) => fetchPng(stack.url, id);

const knight = { prompt: "a knight", width: 64, height: 64, steps: 4, seed: 7, pixel: { width: 32, height: 32, colors: 8 } };

describe("submit → poll → PNG", () => {
  it("runs the README's curl example on tiny SD: 32×32 PNG, ≤ 8 colours, not flat, with timings", async () => {
    const id = await submit(knight);
    const job = await finished(id);
    expect(job).toMatchObject({ status: "completed", engine: "torch", model: "tiny-sd", seed: 7, device: "cpu" });
    expect(job.progress).toEqual({ step: 4, totalSteps: 4 });
    expect(job.result).toEqual({
      width: 32,
      height: 32,
      imageUrl: `/jobs/${id}/image`,
      images: [
        { index: 0, seed: 7, width: 32, height: 32, sha256: expect.stringMatching(/^[0-9a-f]{64}$/), imageUrl: `/jobs/${id}/images/0` },
      ],
      pixel: expect.objectContaining({ grid: expect.anything() }),
    });
    for (const key of ["queueMs", "loadMs", "generateMs", "postprocessMs"]) expect(typeof job.timings[key]).toBe("number");
    expect(Date.parse(job.finishedAt)).toBeGreaterThanOrEqual(Date.parse(job.startedAt));
    const png = decodePng(await imageOf(id));
    expect([png.width, png.height]).toEqual([32, 32]);
    const colours = opaqueColours(png);
    expect(colours).toBeLessThanOrEqual(8);
    expect(colours).toBeGreaterThan(1);
  });

  it("gives identical bytes for the same seed and different bytes for another seed", async () => {
    const a = await submit(knight);
    const b = await submit(knight);
    const c = await submit({ ...knight, seed: 8 });
    for (const id of [a, b, c]) expect((await finished(id)).status).toBe("completed");
    const [pa, pb, pc] = await Promise.all([a, b, c].map(imageOf));
    expect(sha(pa)).toBe(sha(pb));
    expect(sha(pa)).not.toBe(sha(pc));
  });

  it("runs tiny SDXL at 64×64 and keeps the base size without a pixel step", async () => {
    const id = await submit({ prompt: "a castle", model: "tiny-sdxl", width: 64, height: 64, steps: 3, seed: 3 });
    const job = await finished(id);
    expect(job.status).toBe("completed");
    const png = decodePng(await imageOf(id));
    expect([png.width, png.height]).toEqual([64, 64]);
    expect(opaqueColours(png)).toBeGreaterThan(1);
  });

  it("shows a running job as active with step progress, then completed; a second job on the model does not reload", async () => {
    const id = await submit({ prompt: "slow", width: 256, height: 256, steps: 60, seed: 1 });
    const active = await waitFor(async () => {
      const res = await request(stack.url).get(`/jobs/${id}`);
      return res.body.status === "active" && res.body.progress.step > 0 ? res.body : undefined;
    });
    expect(active.progress.totalSteps).toBe(60);
    const done = await finished(id);
    expect(done.status).toBe("completed");
    expect(done.timings.loadMs).toBeLessThan(1000);
  });
});

describe("history", () => {
  it("lists newest first with status/engine filters and a cursor", async () => {
    const all = await request(stack.url).get("/jobs?limit=100");
    expect(all.status).toBe(200);
    const ids: string[] = all.body.items.map((j: { id: string }) => j.id);
    expect(ids.length).toBeGreaterThanOrEqual(5);
    expect([...ids].sort().reverse()).toEqual(ids);

    const page1 = await request(stack.url).get("/jobs?limit=2");
    expect(page1.body.items).toHaveLength(2);
    expect(page1.body.nextCursor).toBe(page1.body.items[1].id);
    const page2 = await request(stack.url).get(`/jobs?limit=2&cursor=${page1.body.nextCursor}`);
    expect(page2.body.items[0].id).toBe(ids[2]);

    const completed = await request(stack.url).get("/jobs?status=completed&engine=torch&limit=100");
    expect(completed.body.items.length).toBeGreaterThan(0);
    expect(completed.body.items.every((j: { status: string; engine: string }) => j.status === "completed" && j.engine === "torch")).toBe(
      true,
    );
    const none = await request(stack.url).get("/jobs?engine=mlx");
    expect(none.body.items).toEqual([]);
  });
});

describe("cancel", () => {
  it("cancels a running job between steps; the runner stays healthy and the next job succeeds", async () => {
    const runner = stack.service.runners.get("torch")!;
    const pid = runner.pid;
    const id = await submit({ prompt: "long", width: 512, height: 512, steps: 150, seed: 2 });
    await waitFor(async () => {
      const res = await request(stack.url).get(`/jobs/${id}`);
      return res.body.status === "active" && res.body.progress.step >= 1;
    });
    const cancel = await request(stack.url).post(`/jobs/${id}/cancel`);
    expect(cancel.status).toBe(202);
    const job = await finished(id);
    expect(job.status).toBe("cancelled");
    expect(job.error.code).toBe("CANCELLED");
    expect(job.progress.step).toBeLessThan(150);
    expect(runner.pid).toBe(pid);
    const next = await finished(await submit(knight));
    expect(next.status).toBe("completed");

    const again = await request(stack.url).post(`/jobs/${id}/cancel`);
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe("JOB_NOT_CANCELLABLE");
  });

  it("cancels a queued job at once", async () => {
    const running = await submit({ prompt: "blocker", width: 256, height: 256, steps: 40, seed: 4 });
    const queued = await submit(knight);
    const res = await request(stack.url).post(`/jobs/${queued}/cancel`);
    expect(res.status).toBe(202);
    const job = await finished(queued);
    expect(job.status).toBe("cancelled");
    expect(job.startedAt).toBeNull();
    expect((await finished(running)).status).toBe("completed");
  });
});

describe("runner killed mid-job", () => {
  it("fails the attempt with ENGINE_INTERNAL, restarts the runner and retries the job to success (attempts: 2)", async () => {
    const runner = stack.service.runners.get("torch")!;
    const oldPid = runner.pid!;
    const id = await submit({ prompt: "doomed", width: 256, height: 256, steps: 40, seed: 5 });
    await waitFor(async () => {
      const res = await request(stack.url).get(`/jobs/${id}`);
      return res.body.status === "active" && res.body.progress.step >= 2;
    });
    process.kill(oldPid, "SIGKILL");
    const job = await finished(id);
    expect(job.status).toBe("completed");
    expect(job.attempts).toBe(2);
    expect(runner.pid).toBeDefined();
    expect(runner.pid).not.toBe(oldPid);
    const next = await finished(await submit(knight));
    expect(next.status).toBe("completed");
    const stuck = await request(stack.url).get("/jobs?status=active");
    expect(stuck.body.items).toEqual([]);
  });
});

describe("docs", () => {
  it("serves the tsoa spec and Swagger UI", async () => {
    const spec = await request(stack.url).get("/openapi.json");
    expect(spec.status).toBe(200);
    expect(spec.body.openapi).toMatch(/^3\./);
    expect(Object.keys(spec.body.paths)).toEqual(
      expect.arrayContaining(["/jobs", "/jobs/{id}", "/jobs/{id}/image", "/jobs/{id}/cancel", "/health"]),
    );
    const docs = await request(stack.url).get("/docs/");
    expect(docs.status).toBe(200);
    expect(docs.text).toContain("swagger-ui");
  });
});

function sha(buf: Buffer): string {
  return createHash("sha256").update(buf).digest("hex");
}
