import request from "supertest";
import WebSocket from "ws";
import { JobsRepository } from "../../src/jobs/jobs.repository";
import { pruneImages } from "../../src/jobs/retention";
import { SseStream } from "../support/sse";
import { decodePng, startTestStack, TestStack, waitFor } from "../support/stack";

// Operations through the real stack: SSE job events with step previews, previews on /ws, DELETE /jobs/{id}, image
// retention, and the admin gate in front of Bull Board.
const KEY = "ops-admin-key-0123456789";
let stack: TestStack;

beforeAll(async () => {
  stack = await startTestStack({ PIXELAI_API_KEY: KEY, PIXELAI_SSE_HEARTBEAT_MS: "150" });
});

afterAll(async () => {
  await stack?.close();
});

const small = { prompt: "a knight", width: 64, height: 64, steps: 4, seed: 5 };
/** Long enough on the tiny model to hold the single worker slot while a test looks at the job queued behind it. */
const blocker = { prompt: "a long castle", width: 256, height: 256, steps: 150, seed: 9 };

async function submit(body: Record<string, unknown>): Promise<string> {
  const res = await request(stack.url).post("/jobs").send(body);
  expect(res.status).toBe(202);
  return res.body.id as string;
}

async function statusOf(id: string): Promise<any> {
  return (await request(stack.url).get(`/jobs/${id}`)).body;
}

async function finished(id: string): Promise<any> {
  return waitFor(async () => {
    const job = await statusOf(id);
    return ["completed", "failed", "cancelled"].includes(job.status) ? job : undefined;
  });
}

describe("GET /jobs/{id}/events (Server-Sent Events)", () => {
  it("streams heartbeats while queued, then progress and previews per step, then the final state, and closes", async () => {
    const first = await submit(blocker);
    await waitFor(async () => (await statusOf(first)).status === "active");
    const id = await submit({ ...small, preview: true, previewEvery: 1 });
    const sse = new SseStream(`${stack.url}/jobs/${id}/events?preview=true`);
    await waitFor(async () => sse.comments.includes("heartbeat"), 10_000, 20); // queued behind the blocker
    expect(sse.status).toBe(200);
    expect(sse.headers["content-type"]).toMatch(/^text\/event-stream/);
    expect(sse.events[0]).toEqual({ event: "progress", data: { step: 0, totalSteps: 4 } }); // where it is now
    await request(stack.url).post(`/jobs/${first}/cancel`).expect(202);
    await sse.done;

    const names = sse.events.map((e) => e.event);
    expect(names[names.length - 1]).toBe("completed");
    expect(names.filter((n) => n === "completed" || n === "failed" || n === "cancelled")).toHaveLength(1);
    const steps = sse.events.filter((e) => e.event === "progress").map((e) => e.data.step);
    expect(steps).toEqual([0, 1, 2, 3, 4]);
    const previews = sse.events.filter((e) => e.event === "preview").map((e) => e.data);
    expect(previews.map((p) => p.step)).toEqual([1, 2, 3, 4]);
    for (const p of previews) {
      // the latent resolution of a 64×64 job, and a real PNG of that size
      expect([p.width, p.height]).toEqual([8, 8]);
      const png = decodePng(Buffer.from(p.pngBase64, "base64"));
      expect([png.width, png.height]).toEqual([8, 8]);
    }
    expect(previews[0].pngBase64).not.toEqual(previews[3].pngBase64); // the latents change as they are denoised
    const final = sse.events[sse.events.length - 1].data;
    expect(final).toMatchObject({ id, status: "completed", result: { width: 64, height: 64 } });
    expect((await finished(first)).status).toBe("cancelled");
    expect(stack.service.events!.watchedJobs()).toBe(0);
  });

  it("leaves previews out unless ?preview=true, and jobs without `preview` make none", async () => {
    const withPreview = await submit({ ...small, seed: 6, preview: true });
    const plain = await submit({ ...small, seed: 7 });
    const a = new SseStream(`${stack.url}/jobs/${withPreview}/events`);
    const b = new SseStream(`${stack.url}/jobs/${plain}/events?preview=true`);
    await Promise.all([a.done, b.done]);
    for (const s of [a, b]) {
      expect(s.events.some((e) => e.event === "preview")).toBe(false);
      expect(s.events[s.events.length - 1].event).toBe("completed");
    }
  });

  it("answers a finished job with its final event at once, and an unknown id with a JSON 404", async () => {
    const id = await submit(small);
    await finished(id);
    const sse = new SseStream(`${stack.url}/jobs/${id}/events`);
    await sse.done;
    expect(sse.events.map((e) => e.event)).toEqual(["completed"]);

    const cancelledId = await submit(blocker);
    await waitFor(async () => (await statusOf(cancelledId)).status === "active");
    const live = new SseStream(`${stack.url}/jobs/${cancelledId}/events`);
    await waitFor(async () => live.events.some((e) => e.event === "progress" && e.data.step > 0), 30_000, 20);
    await request(stack.url).post(`/jobs/${cancelledId}/cancel`).expect(202);
    await live.done;
    expect(live.events[live.events.length - 1]).toMatchObject({
      event: "cancelled",
      data: { status: "cancelled", error: { code: "CANCELLED" } },
    });

    const missing = await request(stack.url).get("/jobs/j_doesnotexist000000000000/events");
    expect(missing.status).toBe(404);
    expect(missing.headers["content-type"]).toMatch(/application\/json/);
    expect(missing.body.error.code).toBe("NOT_FOUND");
  });
});

describe("step previews on /ws", () => {
  it("adds {width, height, pngBase64, rgbaBase64} to the progress frames of a job that asked for previews", async () => {
    const ws = new WebSocket(stack.url.replace(/^http/, "ws") + "/ws");
    const frames: any[] = [];
    ws.on("message", (data) => frames.push(JSON.parse(data.toString("utf8"))));
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    ws.send(JSON.stringify({ type: "submit", requestId: "p-1", job: { ...small, seed: 8, preview: true, previewEvery: 2 } }));
    await waitFor(async () => frames.some((f) => f.type === "completed"), 120_000, 20);
    ws.close();
    const withPreview = frames.filter((f) => f.type === "progress" && f.preview);
    expect(withPreview.map((f) => f.step)).toEqual([2, 4]);
    for (const f of withPreview) {
      const { width, height, pngBase64, rgbaBase64 } = f.preview;
      expect([width, height]).toEqual([8, 8]);
      const rgba = Buffer.from(rgbaBase64, "base64");
      expect(rgba.length).toBe(8 * 8 * 4); // what the extension hands to Image.bytes
      expect(rgba.equals(decodePng(Buffer.from(pngBase64, "base64")).data)).toBe(true);
    }
    expect(frames.filter((f) => f.type === "progress" && !f.preview).map((f) => f.step)).toEqual([1, 3]);
  });
});

describe("DELETE /jobs/{id}", () => {
  it("needs the admin key, removes a finished job with its queue entry, and refuses an active one", async () => {
    const id = await submit(small);
    await finished(id);
    expect(await stack.service.queue.queue.getJob(id)).toBeTruthy();
    const noKey = await request(stack.url).delete(`/jobs/${id}`);
    expect(noKey.status).toBe(401);
    expect(noKey.body.error.code).toBe("UNAUTHORIZED");
    await request(stack.url).delete(`/jobs/${id}`).set("X-API-Key", KEY).expect(204);
    expect((await request(stack.url).get(`/jobs/${id}`)).status).toBe(404);
    expect(await stack.service.queue.queue.getJob(id)).toBeFalsy();
    expect((await request(stack.url).delete(`/jobs/${id}`).set("X-API-Key", KEY)).status).toBe(404);

    const active = await submit(blocker);
    await waitFor(async () => (await statusOf(active)).status === "active");
    const refused = await request(stack.url).delete(`/jobs/${active}`).set("X-API-Key", KEY);
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe("JOB_NOT_FINISHED");
    await request(stack.url).post(`/jobs/${active}/cancel`).expect(202);
    expect((await finished(active)).status).toBe("cancelled");
    await request(stack.url).delete(`/jobs/${active}`).set("X-API-Key", KEY).expect(204);
  });
});

describe("image retention", () => {
  it("prunes images past the count and age limits, keeping the job records", async () => {
    const repo = new JobsRepository(stack.service.db);
    await pruneImages(repo, { maxAgeHours: 0, maxImages: 1_000 }); // nothing to do yet: well under the limit
    const ids: string[] = [];
    for (const seed of [21, 22, 23]) {
      ids.push(await submit({ ...small, seed }));
      await finished(ids[ids.length - 1]);
    }
    const before = (await request(stack.url).get("/jobs?status=completed&limit=100")).body.items.filter(
      (j: any) => !j.result.pruned,
    ).length;
    const byCount = await pruneImages(repo, { maxAgeHours: 0, maxImages: 1 });
    expect(byCount).toEqual({ byAge: 0, byCount: before - 1 });

    const oldest = await statusOf(ids[0]);
    expect(oldest).toMatchObject({ status: "completed", result: { width: 64, height: 64, pruned: true } });
    const gone = await request(stack.url).get(`/jobs/${ids[0]}/image`);
    expect(gone.status).toBe(404);
    expect(gone.body.error).toMatchObject({ code: "NOT_FOUND", details: { pruned: true } });
    expect(gone.body.error.message).toMatch(/pruned/);
    expect((await statusOf(ids[2])).result.pruned).toBeUndefined();
    await request(stack.url).get(`/jobs/${ids[2]}/image`).expect(200);

    // age: nothing is an hour old now; two hours from now the last image is too
    expect(await pruneImages(repo, { maxAgeHours: 1, maxImages: 0 })).toEqual({ byAge: 0, byCount: 0 });
    expect(await pruneImages(repo, { maxAgeHours: 1, maxImages: 0 }, new Date(Date.now() + 2 * 3600_000))).toEqual({
      byAge: 1,
      byCount: 0,
    });
    expect((await statusOf(ids[2])).result.pruned).toBe(true);
    const history = (await request(stack.url).get("/jobs?limit=100")).body.items.map((j: any) => j.id);
    expect(history).toEqual(expect.arrayContaining(ids));
  });
});

describe("Bull Board at /admin/queues", () => {
  it("asks for the admin key, turns ?key= into an HttpOnly SameSite=Strict cookie, and shows the queues", async () => {
    const denied = await request(stack.url).get("/admin/queues");
    expect(denied.status).toBe(401);
    expect(denied.body.error.message).toMatch(/\?key=/);
    expect((await request(stack.url).get("/admin/queues?key=wrong")).status).toBe(401);
    expect((await request(stack.url).get("/admin/queues/api/queues").set("X-API-Key", "wrong")).status).toBe(401);

    const login = await request(stack.url).get("/admin/queues?key=" + encodeURIComponent(KEY));
    expect(login.status).toBe(303);
    expect(login.headers.location).toBe("/admin/queues");
    const cookie = String(login.headers["set-cookie"]);
    expect(cookie).toMatch(/^pixelai_admin=\d+\.[\w-]+; Path=\/admin\/queues; Max-Age=\d+; HttpOnly; SameSite=Strict$/);
    expect(cookie).not.toContain(KEY);
    const session = cookie.split(";")[0];

    const page = await request(stack.url).get("/admin/queues").set("Cookie", session);
    expect(page.status).toBe(200);
    expect(page.headers["content-type"]).toMatch(/text\/html/);
    const api = await request(stack.url).get("/admin/queues/api/queues").set("Cookie", session);
    expect(api.status).toBe(200);
    expect(api.body.queues.map((q: any) => q.name).sort()).toEqual(["convert", "generate", "install"]);
    expect(api.body.queues.every((q: any) => q.readOnlyMode === true)).toBe(true);
    await request(stack.url).get("/admin/queues/api/queues").set("X-API-Key", KEY).expect(200);

    const forged = session.replace(/.$/, (c) => (c === "A" ? "B" : "A"));
    expect((await request(stack.url).get("/admin/queues").set("Cookie", forged)).status).toBe(401);
  });
});
