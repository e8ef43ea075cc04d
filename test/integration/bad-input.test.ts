import IORedis from "ioredis";
import request from "supertest";
import { EngineStatusStore, PROBE_MAX_AGE_MS } from "../../src/backends/engine-status";
import { startTestStack, TestStack } from "../support/stack";

let stack: TestStack;
beforeAll(async () => {
  stack = await startTestStack({}, { api: true, worker: false });
});
afterAll(async () => {
  await stack?.close();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const ok = { prompt: "a knight", width: 64, height: 64, steps: 4 };

/** [name, body, expected status, expected code] — every one must be refused before anything is queued. */
const bodies: Array<[string, unknown, number, string]> = [
  ["missing prompt", { width: 64 }, 400, "INVALID_REQUEST"],
  ["empty prompt", { prompt: "" }, 400, "INVALID_REQUEST"],
  ["blank prompt", { prompt: "   " }, 400, "INVALID_REQUEST"],
  ["prompt not a string", { prompt: 42 }, 400, "INVALID_REQUEST"],
  ["prompt too long", { prompt: "x".repeat(2001) }, 400, "INVALID_REQUEST"],
  ["width too big", { ...ok, width: 4096 }, 400, "INVALID_REQUEST"],
  ["width 2056", { ...ok, width: 2056 }, 400, "INVALID_REQUEST"],
  ["width too small", { ...ok, width: 32 }, 400, "INVALID_REQUEST"],
  ["width not multiple of 8", { ...ok, width: 100 }, 400, "INVALID_REQUEST"],
  ["height not multiple of 8", { ...ok, height: 65 }, 400, "INVALID_REQUEST"],
  ["width fractional", { ...ok, width: 64.5 }, 400, "INVALID_REQUEST"],
  ["width string", { ...ok, width: "64" }, 400, "INVALID_REQUEST"],
  ["width negative", { ...ok, width: -64 }, 400, "INVALID_REQUEST"],
  ["steps 0", { ...ok, steps: 0 }, 400, "INVALID_REQUEST"],
  ["steps 151", { ...ok, steps: 151 }, 400, "INVALID_REQUEST"],
  ["steps null", { ...ok, steps: null }, 400, "INVALID_REQUEST"],
  ["guidance negative", { ...ok, guidanceScale: -1 }, 400, "INVALID_REQUEST"],
  ["guidance huge", { ...ok, guidanceScale: 1000 }, 400, "INVALID_REQUEST"],
  ["seed too big", { ...ok, seed: 2 ** 40 }, 400, "INVALID_REQUEST"],
  ["seed -2", { ...ok, seed: -2 }, 400, "INVALID_REQUEST"],
  ["seed fractional", { ...ok, seed: 1.5 }, 400, "INVALID_REQUEST"],
  ["unknown field", { ...ok, hacker: true }, 400, "INVALID_REQUEST"],
  ["unknown nested field", { ...ok, pixel: { width: 32, height: 32, evil: 1 } }, 400, "INVALID_REQUEST"],
  ["colors 257", { ...ok, pixel: { width: 32, height: 32, colors: 257 } }, 400, "INVALID_REQUEST"],
  ["colors negative", { ...ok, pixel: { width: 32, height: 32, colors: -1 } }, 400, "INVALID_REQUEST"],
  ["pixel width 0", { ...ok, pixel: { width: 0, height: 32 } }, 400, "INVALID_REQUEST"],
  ["pixel missing height", { ...ok, pixel: { width: 32 } }, 400, "INVALID_REQUEST"],
  ["bad fit mode", { ...ok, pixel: { width: 32, height: 32, fitMode: "squash" } }, 400, "INVALID_REQUEST"],
  ["bad grid mode", { ...ok, pixel: { width: 32, height: 32, grid: "magic" } }, 400, "INVALID_REQUEST"],
  ["bad engine", { ...ok, engine: "tensorflow" }, 400, "INVALID_REQUEST"],
  ["bad scheduler", { ...ok, scheduler: "magic" }, 400, "INVALID_REQUEST"],
  ["removeBackground true", { ...ok, removeBackground: true }, 400, "INVALID_REQUEST"],
  ["removeBackground unknown", { ...ok, removeBackground: "rembg" }, 400, "INVALID_REQUEST"],
  ["priority 0", { ...ok, priority: 0 }, 400, "INVALID_REQUEST"],
  ["body is an array", [ok], 400, "INVALID_REQUEST"],
  ["body is a string", "a knight", 400, "INVALID_REQUEST"],
  ["unknown model", { ...ok, model: "no-such-model" }, 404, "MODEL_NOT_FOUND"],
  ["model traversal", { ...ok, model: "../etc" }, 400, "INVALID_REQUEST"],
  ["model absolute", { ...ok, model: "/etc/passwd" }, 400, "INVALID_REQUEST"],
  ["model with NUL", { ...ok, model: "tiny-sd\u0000x" }, 400, "INVALID_REQUEST"],
  ["unknown lora", { ...ok, lora: { name: "nope", strength: 1 } }, 404, "LORA_NOT_FOUND"],
  ["lora strength huge", { ...ok, lora: { name: "x", strength: 99 } }, 400, "INVALID_REQUEST"],
];

describe("bad input on POST /jobs", () => {
  it.each(bodies)("%s", async (_name, body, status, code) => {
    const res = await request(stack.url).post("/jobs").set("Content-Type", "application/json").send(JSON.stringify(body));
    expect(res.status).toBe(status);
    expect(res.headers["content-type"]).toMatch(/application\/json/);
    expect(res.body.error.code).toBe(code);
    expect(typeof res.body.error.message).toBe("string");
  });

  it("rejects malformed JSON as INVALID_REQUEST", async () => {
    const res = await request(stack.url).post("/jobs").set("Content-Type", "application/json").send('{"prompt": "a",');
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe("INVALID_REQUEST");
  });

  it("rejects a huge body as PAYLOAD_TOO_LARGE", async () => {
    const res = await request(stack.url)
      .post("/jobs")
      .set("Content-Type", "application/json")
      .send(JSON.stringify({ prompt: "x".repeat(200_000) }));
    expect(res.status).toBe(413);
    expect(res.body.error.code).toBe("PAYLOAD_TOO_LARGE");
  });

  it("queued nothing for any of them", async () => {
    const res = await request(stack.url).get("/jobs?limit=100");
    expect(res.body.items).toEqual([]);
    expect(await stack.service.queue.queue.count()).toBe(0);
  });
});

describe("bad ids and queries", () => {
  const cases: Array<[string, string, string, number, string]> = [
    ["unknown job", "get", "/jobs/01aaaaaaaaaaaaaaaaaaaaaaaa", 404, "NOT_FOUND"],
    ["malformed job id", "get", "/jobs/..%2f..%2fetc", 404, "NOT_FOUND"],
    ["image of unknown job", "get", "/jobs/not-a-job/image", 404, "NOT_FOUND"],
    ["cancel unknown job", "post", "/jobs/zzz/cancel", 404, "NOT_FOUND"],
    ["bad status filter", "get", "/jobs?status=exploded", 400, "INVALID_REQUEST"],
    ["bad engine filter", "get", "/jobs?engine=x", 400, "INVALID_REQUEST"],
    ["limit 0", "get", "/jobs?limit=0", 400, "INVALID_REQUEST"],
    ["limit 1000", "get", "/jobs?limit=1000", 400, "INVALID_REQUEST"],
    ["limit text", "get", "/jobs?limit=ten", 400, "INVALID_REQUEST"],
    ["bad cursor", "get", "/jobs?cursor=%27%20OR%201=1", 400, "INVALID_REQUEST"],
    ["unknown route", "get", "/nope", 404, "NOT_FOUND"],
    ["unknown model", "get", "/models/unknown", 404, "MODEL_NOT_FOUND"],
  ];
  it.each(cases)("%s", async (_name, method, url, status, code) => {
    const res = await (method === "get" ? request(stack.url).get(url) : request(stack.url).post(url));
    expect(res.status).toBe(status);
    expect(res.body.error.code).toBe(code);
  });
});

describe("Host and Origin checks (DNS rebinding)", () => {
  it("refuses a foreign Host header", async () => {
    const res = await request(stack.url).get("/health").set("Host", "evil.example:5000");
    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe("FORBIDDEN");
  });
  it("refuses a foreign Origin", async () => {
    const res = await request(stack.url).post("/jobs").set("Origin", "http://evil.example").send(ok);
    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe("FORBIDDEN");
  });
  it("accepts a page of our own origin (Swagger UI), compared with its port", async () => {
    const res = await request(stack.url).get("/health").set("Host", "localhost:5000").set("Origin", "http://localhost:5000");
    expect(res.status).toBe(200);
    const otherPort = await request(stack.url).get("/health").set("Host", "localhost:5000").set("Origin", "http://localhost:5001");
    expect(otherPort.status).toBe(403);
  });
});

describe("engine capabilities are checked at submit, not after queueing", () => {
  it("refuses a scheduler or a LoRA the engine's runner does not offer, and queues what it does", async () => {
    const redis = new IORedis(stack.service.redisUrl);
    try {
      // what a worker publishes for an engine whose runner offers only Euler and no LoRA (an older runner, say)
      await new EngineStatusStore(redis, stack.config.queuePrefix).publish({
        engine: "torch",
        available: true,
        features: { lora: false },
        schedulers: ["euler"],
      });
      // what the API process read before (earlier submits) it trusts for PROBE_MAX_AGE_MS (engine-status.ts)
      await sleep(PROBE_MAX_AGE_MS + 50);
      const scheduler = await request(stack.url)
        .post("/jobs")
        .send({ ...ok, scheduler: "dpmpp_2m" });
      expect(scheduler.status).toBe(400);
      expect(scheduler.body.error).toMatchObject({ code: "INVALID_REQUEST", details: { engine: "torch", field: "scheduler" } });
      expect(scheduler.body.error.message).toContain("it offers euler");
      const lora = await request(stack.url)
        .post("/jobs")
        .send({ ...ok, lora: { name: "tiny-sd-lora", strength: 1 } });
      expect([lora.status, lora.body.error.code]).toEqual([422, "LORA_UNSUPPORTED_ENGINE"]);
      const fine = await request(stack.url)
        .post("/jobs")
        .send({ ...ok, scheduler: "euler" });
      expect(fine.status).toBe(202);
    } finally {
      await redis.del(`${stack.config.queuePrefix}:engine:torch`);
      redis.disconnect();
      await sleep(PROBE_MAX_AGE_MS + 50); // the next tests' submits must not see this probe any more
    }
  });
});
