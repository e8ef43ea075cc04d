import request from "supertest";
import { waitFor } from "./stack";

/** The few REST calls most integration tests make, against a stack's base URL. */
export const FINAL_STATES = ["completed", "failed", "cancelled"];

/** POST /jobs, expecting it queued; returns the job id. */
export async function submitJob(url: string, body: Record<string, unknown>): Promise<string> {
  const res = await request(url).post("/jobs").send(body);
  expect(res.status).toBe(202);
  expect(res.body.status).toBe("queued");
  return res.body.id as string;
}

/** Polls GET /jobs/{id} until the job is final; returns its view. */
export async function finishedJob(url: string, id: string, timeoutMs = 120_000) {
  return waitFor(async () => {
    const res = await request(url).get(`/jobs/${id}`);
    return FINAL_STATES.includes(res.body.status) ? res.body : undefined;
  }, timeoutMs);
}

/** GET /jobs/{id}/image as raw PNG bytes. */
export async function fetchPng(url: string, id: string): Promise<Buffer> {
  const res = await request(url)
    .get(`/jobs/${id}/image`)
    .buffer(true)
    .parse((r, cb) => {
      const chunks: Buffer[] = [];
      r.on("data", (c: Buffer) => chunks.push(c));
      r.on("end", () => cb(null, Buffer.concat(chunks)));
    });
  expect(res.status).toBe(200);
  expect(res.headers["content-type"]).toBe("image/png");
  return res.body as Buffer;
}
