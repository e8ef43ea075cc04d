import request from "supertest";
import WebSocket from "ws";
import { finishedJob } from "../support/jobs-client";
import { startTestStack, TestStack, waitFor } from "../support/stack";

/**
 * Fair use of the GPU through the real stack (API + worker + torch runner on tiny SD, Redis, SQLite): only the admin key
 * jumps the queue, one client's queued jobs are capped, a job's width × height × steps is bounded, idempotency keys are
 * per client, and a cancelled job whose runner does not stop frees the worker within PIXELAI_CANCEL_GRACE_MS.
 */
jest.setTimeout(300_000);

const ADMIN_KEY = "fair-use-admin-key";
const GRACE_MS = 1_500;
const CAP = 3;
/** The size bound: exactly one 512×512 job of 100 steps. */
const MAX_PIXEL_STEPS = 512 * 512 * 100;
const admin = { "X-API-Key": ADMIN_KEY };

let stack: TestStack;
let wsUrl: string;
beforeAll(async () => {
  stack = await startTestStack({
    PIXELAI_ENGINES: "torch",
    PIXELAI_API_KEY: ADMIN_KEY,
    PIXELAI_CANCEL_GRACE_MS: String(GRACE_MS),
    PIXELAI_MAX_QUEUED_PER_CLIENT: String(CAP),
    PIXELAI_MAX_PIXEL_STEPS: String(MAX_PIXEL_STEPS),
    PIXELAI_RATE_LIMIT_PER_MIN: "0",
  });
  wsUrl = stack.url.replace(/^http/, "ws") + "/ws";
  expect((await finished(await submit({ prompt: "warm-up", width: 64, height: 64, steps: 1 }))).status).toBe("completed");
});
afterAll(async () => {
  await stack?.close();
});

const tiny = { prompt: "a slime", width: 64, height: 64, steps: 2 };
/** Long enough to stay queued or running for the whole of a test (minutes on the tiny model), and exactly at the bound. */
const long = { prompt: "a long castle", width: 512, height: 512, steps: 100 };

function post(body: unknown, headers: Record<string, string> = {}) {
  return request(stack.url)
    .post("/jobs")
    .set(headers)
    .send(body as object);
}

async function submit(body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<string> {
  const res = await post(body, headers);
  expect(res.status).toBe(202);
  return res.body.id as string;
}

const finished = (id: string) => finishedJob(stack.url, id, 180_000);

/** A WebSocket client; `ask` sends a frame and waits for the first frame answering its requestId. */
async function openWs(headers: Record<string, string> = {}) {
  const ws = new WebSocket(wsUrl, { headers });
  const frames: Array<Record<string, any>> = [];
  ws.on("message", (data) => frames.push(JSON.parse(String(data))));
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  return {
    ws,
    async ask(job: Record<string, unknown>, requestId: string) {
      ws.send(JSON.stringify({ type: "submit", requestId, job }));
      return waitFor(async () => frames.find((f) => f.requestId === requestId), 30_000, 20);
    },
  };
}

async function cancelAndWait(ids: string[]) {
  for (const id of ids) await request(stack.url).post(`/jobs/${id}/cancel`);
  for (const id of ids) expect((await finished(id)).status).toBe("cancelled");
}

describe("priority", () => {
  it("refuses a priority above the default without the admin key (REST and /ws), takes the default from anyone, any from the key", async () => {
    const anonymous = await post({ ...tiny, priority: 1 });
    expect(anonymous.status).toBe(403);
    expect(anonymous.body.error).toMatchObject({ code: "PRIORITY_FORBIDDEN", details: { field: "priority", defaultPriority: 1000 } });
    const wrongKey = await post({ ...tiny, priority: 999 }, { "X-API-Key": "not-the-key" });
    expect(wrongKey.status).toBe(403);
    expect(wrongKey.body.error.code).toBe("PRIORITY_FORBIDDEN");

    const ids = [await submit({ ...tiny, priority: 1000 }), await submit({ ...tiny, priority: 1 }, admin)];

    const anonymousWs = await openWs();
    expect(await anonymousWs.ask({ ...tiny, priority: 1 }, "p1")).toMatchObject({ type: "error", code: "PRIORITY_FORBIDDEN" });
    anonymousWs.ws.close();
    const adminWs = await openWs(admin);
    const accepted = await adminWs.ask({ ...tiny, priority: 1 }, "p2");
    expect(accepted).toMatchObject({ type: "accepted" });
    ids.push(accepted.id);
    adminWs.ws.close();
    for (const id of ids) expect((await finished(id)).status).toBe("completed");
  });
});

describe("size bound", () => {
  it("refuses width × height × steps above PIXELAI_MAX_PIXEL_STEPS with 400 JOB_TOO_LARGE on REST, legacy and /ws", async () => {
    const rest = await post({ ...long, steps: 101 });
    expect(rest.status).toBe(400);
    expect(rest.body.error).toMatchObject({
      code: "JOB_TOO_LARGE",
      details: { pixelSteps: 512 * 512 * 101, maxPixelSteps: MAX_PIXEL_STEPS },
    });
    // the default steps (20) count too
    expect((await post({ prompt: "big", width: 2048, height: 2048 })).body.error.code).toBe("JOB_TOO_LARGE");
    const legacy = await request(stack.url).post("/generate").send({ prompt: "big", width: 1024, height: 1024, steps: 30 });
    expect(legacy.status).toBe(400);
    expect(legacy.body).toMatchObject({ success: false, code: "JOB_TOO_LARGE" });
    const client = await openWs();
    expect(await client.ask({ ...long, steps: 101 }, "big")).toMatchObject({ type: "error", code: "JOB_TOO_LARGE" });
    client.ws.close();
    const listed = await request(stack.url).get("/jobs?limit=100");
    expect(listed.body.items.filter((j: { prompt: string }) => j.prompt === "big" || j.steps === 101)).toEqual([]);
  });
});

describe("queued cap", () => {
  it("answers 429 TOO_MANY_QUEUED once a client has PIXELAI_MAX_QUEUED_PER_CLIENT jobs queued or running; other clients are not held back", async () => {
    // at the bound exactly: accepted
    const mine = [await submit({ ...long, seed: 1 }), await submit({ ...long, seed: 2 }), await submit({ ...long, seed: 3 })];
    const over = await post(tiny);
    expect(over.status).toBe(429);
    expect(over.body.error).toMatchObject({ code: "TOO_MANY_QUEUED", details: { unfinished: CAP, maxQueuedPerClient: CAP } });
    const legacy = await request(stack.url).post("/generate").send({ prompt: "x", width: 64, height: 64, steps: 1 });
    expect(legacy.status).toBe(429);
    expect(legacy.body).toMatchObject({ success: false, code: "TOO_MANY_QUEUED" });
    const client = await openWs();
    expect(await client.ask(tiny, "over")).toMatchObject({ type: "error", code: "TOO_MANY_QUEUED" });
    client.ws.close();

    // the admin key is another client, with its own cap
    const theirs = await submit({ ...tiny, seed: 4 }, admin);

    // a cancelled job no longer counts
    await cancelAndWait([mine[2]]);
    const again = await submit({ ...tiny, seed: 5 });
    await cancelAndWait([mine[0], mine[1]]);
    for (const id of [theirs, again]) expect((await finished(id)).status).toBe("completed");
  });
});

describe("idempotency keys", () => {
  it("are per client: another client's key is another job, and a repeat with another body is 409 IDEMPOTENCY_CONFLICT", async () => {
    const body = { ...tiny, idempotencyKey: "shared-name" };
    const anonymous = await submit(body);
    const adminJob = await submit(body, admin);
    expect(adminJob).not.toBe(anonymous);
    expect(await submit(body)).toBe(anonymous);
    expect(await submit(body, admin)).toBe(adminJob);

    const changed = await post({ ...body, seed: 99 });
    expect(changed.status).toBe(409);
    expect(changed.body.error).toMatchObject({ code: "IDEMPOTENCY_CONFLICT", details: { field: "idempotencyKey", id: anonymous } });
    // the same client over /ws (same address): the same job for the same body, the conflict for another
    const client = await openWs();
    expect(await client.ask(body, "same")).toMatchObject({ type: "accepted", id: anonymous });
    expect(await client.ask({ ...body, prompt: "another" }, "other")).toMatchObject({ type: "error", code: "IDEMPOTENCY_CONFLICT" });
    client.ws.close();
    for (const id of [anonymous, adminJob]) expect((await finished(id)).status).toBe("completed");
  });
});

describe("cancel of a runner that does not stop", () => {
  it("kills it after PIXELAI_CANCEL_GRACE_MS: the job ends CANCELLED (not retried), the runner restarts and the next job runs", async () => {
    const runner = stack.service.runners.get("torch")!;
    const id = await submit({ ...long, seed: 6 });
    const next = await submit({ ...tiny, seed: 7 });
    await waitFor(async () => {
      const res = await request(stack.url).get(`/jobs/${id}`);
      return res.body.status === "active" && res.body.progress.step >= 1;
    });
    // A runner inside a step that takes longer than the grace (a large picture on a CPU) reads nothing until the step
    // ends; a stopped process is that runner, on cue.
    const pid = runner.pid!;
    process.kill(pid, "SIGSTOP");
    const cancelledAt = Date.now();
    expect((await request(stack.url).post(`/jobs/${id}/cancel`)).status).toBe(202);
    const job = await finished(id);
    const freedMs = Date.parse(job.finishedAt) - cancelledAt;
    console.log(`[fair-use] cancel → job final with its runner stopped: ${freedMs} ms (grace ${GRACE_MS} ms)`);
    expect(job.status).toBe("cancelled");
    expect(job.error.code).toBe("CANCELLED");
    expect(job.error.message).toMatch(/did not stop within the grace and was killed/);
    expect(job.attempts).toBe(1);
    expect(freedMs).toBeGreaterThanOrEqual(GRACE_MS - 100);
    expect(freedMs).toBeLessThan(GRACE_MS + 3_000);
    // the worker took the next job: on a restarted runner
    const done = await finished(next);
    expect(done.status).toBe("completed");
    expect(runner.pid).toBeDefined();
    expect(runner.pid).not.toBe(pid);
  });
});
