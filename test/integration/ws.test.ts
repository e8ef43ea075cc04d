import { execFileSync } from "node:child_process";
import path from "node:path";
import request from "supertest";
import WebSocket from "ws";
import { startTestStack, TestStack, waitFor, decodePng } from "../support/stack";

type Frame = Record<string, any>;

let stack: TestStack;
let wsUrl: string;
const repoRoot = path.resolve(__dirname, "..", "..");

beforeAll(async () => {
  stack = await startTestStack();
  wsUrl = stack.url.replace(/^http/, "ws") + "/ws";
});

afterAll(async () => {
  await stack?.close();
});

/** A WebSocket client that records every frame it gets. */
class Client {
  readonly frames: Frame[] = [];
  private constructor(readonly ws: WebSocket) {
    ws.on("message", (data, isBinary) => {
      if (!isBinary) this.frames.push(JSON.parse(data.toString("utf8")));
    });
  }

  static open(url = wsUrl, headers: Record<string, string> = {}): Promise<Client> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers });
      const client = new Client(ws);
      ws.once("open", () => resolve(client));
      ws.once("error", reject);
      ws.once("unexpected-response", (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode })));
    });
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** The first frame (from `from` on) that matches. */
  async next(pred: (f: Frame) => boolean, from = 0, timeoutMs = 120_000): Promise<Frame> {
    return waitFor(async () => this.frames.slice(from).find(pred), timeoutMs, 20);
  }

  /** Sends a frame and returns the next frame received after it. */
  async ask(frame: unknown, binary = false): Promise<Frame> {
    const from = this.frames.length;
    if (binary) this.ws.send(Buffer.from(JSON.stringify(frame)), { binary: true });
    else this.send(frame);
    return waitFor(async () => this.frames[from], 10_000, 10);
  }

  ofJob(id: string): Frame[] {
    return this.frames.filter((f) => f.id === id);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) return resolve();
      this.ws.once("close", () => resolve());
      this.ws.close();
    });
  }
}

const knight = { prompt: "a knight", width: 64, height: 64, steps: 4, seed: 7, pixel: { width: 32, height: 32, colors: 8 } };

function decodeFrameWithLua(frame: Frame): string {
  return execFileSync("lua5.4", [path.join(repoRoot, "aseprite", "tools", "decode_frame.lua")], { input: JSON.stringify(frame) })
    .toString()
    .trim();
}

describe("submit → accepted → progress → completed", () => {
  it("streams a 32×32 pixel job and ends with raw RGBA the extension's parser accepts", async () => {
    const c = await Client.open();
    c.send({ type: "submit", requestId: "req-1", job: { ...knight, steps: 8 } });
    const accepted = await c.next((f) => f.type === "accepted");
    expect(accepted).toEqual({ type: "accepted", requestId: "req-1", id: expect.any(String) });
    const id = accepted.id as string;
    const completed = await c.next((f) => f.type === "completed" && f.id === id);
    expect(completed).toMatchObject({ id, width: 32, height: 32, seed: 7 });
    const rgba = Buffer.from(completed.rgbaBase64, "base64");
    expect(rgba.length).toBe(32 * 32 * 4);

    // frames of this job: accepted first, progress in order, completed last
    const mine = c.frames.filter((f) => f.id === id);
    const progress = mine.filter((f) => f.type === "progress");
    expect(progress.length).toBeGreaterThan(0);
    for (const p of progress) expect(p).toEqual({ type: "progress", id, step: expect.any(Number), totalSteps: 8 });
    const steps = progress.map((p) => p.step);
    expect([...steps].sort((a, b) => a - b)).toEqual(steps);
    expect(mine[0].type).toBe("accepted");
    expect(mine[mine.length - 1].type).toBe("completed");

    // the same pixels as the stored PNG
    const png = await request(stack.url)
      .get(`/jobs/${id}/image`)
      .buffer(true)
      .parse((r, cb) => {
        const chunks: Buffer[] = [];
        r.on("data", (d: Buffer) => chunks.push(d));
        r.on("end", () => cb(null, Buffer.concat(chunks)));
      });
    expect(Buffer.compare(decodePng(png.body as Buffer).data, rgba)).toBe(0);

    // the Aseprite extension's own parser (protocol.lua + base64.lua) takes the frame
    expect(decodeFrameWithLua(completed)).toBe("ok completed 32 32 4096");
    await c.close();
  });

  it("answers a repeated idempotencyKey with the same job, already completed", async () => {
    const c = await Client.open();
    c.send({ type: "submit", requestId: "idem-1", job: { ...knight, idempotencyKey: "ws-idem-1" } });
    const first = await c.next((f) => f.type === "accepted");
    await c.next((f) => f.type === "completed" && f.id === first.id);
    const from = c.frames.length;
    c.send({ type: "submit", requestId: "idem-2", job: { ...knight, idempotencyKey: "ws-idem-1" } });
    const again = await c.next((f) => f.type === "accepted", from);
    expect(again.id).toBe(first.id);
    const done = await c.next((f) => f.type === "completed", from);
    expect(done.id).toBe(first.id);
    await c.close();
  });

  it("sends engines with torch on cpu, the default engine and model names", async () => {
    const c = await Client.open();
    const frame = await c.ask({ type: "engines" });
    expect(frame.type).toBe("engines");
    expect(frame.default).toBe("torch");
    expect(frame.engines.torch).toMatchObject({ available: true, device: "cpu" });
    expect(typeof frame.engines.torch.features).toBe("object");
    expect(Array.isArray(frame.engines.torch.schedulers)).toBe(true);
    expect(typeof frame.engines.mlx.available).toBe("boolean");
    expect(frame.models).toEqual(expect.arrayContaining(["tiny-sd", "tiny-sdxl"]));
    expect(Array.isArray(frame.loras)).toBe(true);
    expect(decodeFrameWithLua(frame)).toBe("ok engines 0 0 0");
    await c.close();
  });
});

describe("cancel and subscribe", () => {
  it("cancels a running job over WS: cancelled frame; a second cancel is an error frame", async () => {
    const c = await Client.open();
    c.send({ type: "submit", requestId: "long-1", job: { prompt: "long", width: 512, height: 512, steps: 150, seed: 2 } });
    const { id } = await c.next((f) => f.type === "accepted");
    await c.next((f) => f.type === "progress" && f.id === id);
    c.send({ type: "cancel", id });
    const cancelled = await c.next((f) => f.type === "cancelled" && f.id === id);
    expect(cancelled).toEqual({ type: "cancelled", id });
    const again = await c.ask({ type: "cancel", id });
    expect(again).toMatchObject({ type: "error", code: "JOB_NOT_CANCELLABLE", id });
    const job = await request(stack.url).get(`/jobs/${id}`);
    expect(job.body.status).toBe("cancelled");
    await c.close();
  });

  it("lets a second client subscribe to a running job, and to a finished one (final frame at once)", async () => {
    const a = await Client.open();
    const b = await Client.open();
    a.send({
      type: "submit",
      requestId: "shared-1",
      job: { prompt: "shared", width: 128, height: 128, steps: 30, seed: 3, pixel: { width: 32, height: 32 } },
    });
    const { id } = await a.next((f) => f.type === "accepted");
    b.send({ type: "subscribe", id });
    const bDone = await b.next((f) => f.type === "completed" && f.id === id);
    const aDone = await a.next((f) => f.type === "completed" && f.id === id);
    expect(bDone.rgbaBase64).toBe(aDone.rgbaBase64);
    expect(b.ofJob(id).some((f) => f.type === "progress")).toBe(true);

    const late = await Client.open();
    const final = await late.ask({ type: "subscribe", id });
    expect(final).toMatchObject({ type: "completed", id, width: 32, height: 32 });

    const unknown = await late.ask({ type: "subscribe", id: "0000000000000000000000000z" });
    expect(unknown).toMatchObject({ type: "error", code: "NOT_FOUND" });
    await Promise.all([a.close(), b.close(), late.close()]);
  });

  it("keeps clients apart: B never sees A's frames, an idle client sees nothing", async () => {
    const a = await Client.open();
    const b = await Client.open();
    const idle = await Client.open();
    a.send({ type: "submit", requestId: "a-1", job: { ...knight, seed: 11 } });
    b.send({ type: "submit", requestId: "b-1", job: { ...knight, seed: 12 } });
    const aId = (await a.next((f) => f.type === "accepted")).id;
    const bId = (await b.next((f) => f.type === "accepted")).id;
    await a.next((f) => f.type === "completed" && f.id === aId);
    await b.next((f) => f.type === "completed" && f.id === bId);
    await new Promise((r) => setTimeout(r, 300));
    expect(a.frames.every((f) => f.id === aId)).toBe(true);
    expect(b.frames.every((f) => f.id === bId)).toBe(true);
    expect(a.frames.some((f) => f.requestId === "b-1")).toBe(false);
    expect(idle.frames).toEqual([]);
    await Promise.all([a.close(), b.close(), idle.close()]);
  });
});

describe("bad frames", () => {
  const badJobs: Array<[string, Record<string, unknown>]> = [
    ["no prompt", { width: 64 }],
    ["empty prompt", { prompt: "" }],
    ["blank prompt", { prompt: "   " }],
    ["width too large", { prompt: "x", width: 4096 }],
    ["width too small", { prompt: "x", width: 32 }],
    ["width not a multiple of 8", { prompt: "x", width: 100 }],
    ["fractional steps", { prompt: "x", steps: 1.5 }],
    ["zero steps", { prompt: "x", steps: 0 }],
    ["guidance too high", { prompt: "x", guidanceScale: 31 }],
    ["seed below -1", { prompt: "x", seed: -2 }],
    ["unknown engine", { prompt: "x", engine: "cuda" }],
    ["unknown scheduler", { prompt: "x", scheduler: "plms" }],
    ["unknown field", { prompt: "x", sampler: "euler" }],
    ["snake_case field", { prompt: "x", negative_prompt: "y" }],
    ["pixel without height", { prompt: "x", pixel: { width: 32 } }],
    ["pixel unknown fit", { prompt: "x", pixel: { width: 32, height: 32, fitMode: "zoom" } }],
    ["pixel unknown grid", { prompt: "x", pixel: { width: 32, height: 32, grid: "magic" } }],
    ["pixel extra field", { prompt: "x", pixel: { width: 32, height: 32, dither: true } }],
    ["too many colours", { prompt: "x", pixel: { width: 32, height: 32, colors: 300 } }],
    ["empty lora name", { prompt: "x", lora: { name: "" } }],
    ["removeBackground true", { prompt: "x", removeBackground: true }],
    ["removeBackground unknown", { prompt: "x", removeBackground: "magic" }],
    ["unknown model", { prompt: "x", model: "no-such-model" }],
    ["prompt not a string", { prompt: 42 }],
    ["width as a string", { prompt: "x", width: "64" }],
  ];

  it("answers each bad job with the same code and message as POST /jobs (one validation, no drift)", async () => {
    const c = await Client.open();
    for (const [label, job] of badJobs) {
      const frame = await c.ask({ type: "submit", requestId: `bad-${label}`, job });
      const rest = await request(stack.url).post("/jobs").send(job);
      expect({ label, status: rest.status >= 400 && rest.status < 500 }).toEqual({ label, status: true });
      expect({ label, type: frame.type, code: frame.code, message: frame.message, requestId: frame.requestId }).toEqual({
        label,
        type: "error",
        code: rest.body.error.code,
        message: rest.body.error.message,
        requestId: `bad-${label}`,
      });
    }
    // and borderline values both accept: seed -1 (random), removeBackground false, an empty negative prompt
    for (const [i, job] of [
      { ...knight, seed: -1 },
      { ...knight, removeBackground: false },
      { ...knight, negativePrompt: "" },
    ].entries()) {
      // earlier accepted jobs keep sending their own frames: wait for the answer to this submit
      const from = c.frames.length;
      c.send({ type: "submit", requestId: `ok-${i}`, job });
      const frame = await c.next((f) => f.requestId === `ok-${i}`, from, 10_000);
      const rest = await request(stack.url).post("/jobs").send(job);
      expect(frame.type).toBe("accepted");
      expect(rest.status).toBe(202);
    }
    await c.close();
  });

  it("answers 20+ malformed frames with error frames, stays open, and still takes a valid submit", async () => {
    const c = await Client.open();
    const bad: Array<[unknown, string, boolean?]> = [
      ["not json", "INVALID_REQUEST"],
      ["", "INVALID_REQUEST"],
      ['{"type":', "INVALID_REQUEST"],
      ["[]", "INVALID_REQUEST"],
      ["42", "INVALID_REQUEST"],
      ["null", "INVALID_REQUEST"],
      ['"submit"', "INVALID_REQUEST"],
      ["true", "INVALID_REQUEST"],
      [{}, "INVALID_REQUEST"],
      [{ type: 5 }, "INVALID_REQUEST"],
      [{ type: "launch" }, "INVALID_REQUEST"],
      [{ type: "SUBMIT", requestId: "r", job: knight }, "INVALID_REQUEST"],
      [{ type: "submit" }, "INVALID_REQUEST"],
      [{ type: "submit", requestId: "", job: knight }, "INVALID_REQUEST"],
      [{ type: "submit", requestId: 7, job: knight }, "INVALID_REQUEST"],
      [{ type: "submit", requestId: "r" }, "INVALID_REQUEST"],
      [{ type: "submit", requestId: "r", job: "a knight" }, "INVALID_REQUEST"],
      [{ type: "submit", requestId: "r", job: [knight] }, "INVALID_REQUEST"],
      [{ type: "submit", requestId: "r", job: { ...knight, width: 4096 } }, "INVALID_REQUEST"],
      [{ type: "cancel" }, "INVALID_REQUEST"],
      [{ type: "cancel", id: 5 }, "INVALID_REQUEST"],
      [{ type: "cancel", id: "nope" }, "NOT_FOUND"],
      [{ type: "subscribe" }, "INVALID_REQUEST"],
      [{ type: "subscribe", id: "../../etc/passwd" }, "NOT_FOUND"],
      [{ type: "engines" }, "binary", true],
      ["x".repeat(70 * 1024), "PAYLOAD_TOO_LARGE"],
      [JSON.stringify({ type: "submit", requestId: "big", job: { ...knight, prompt: "y".repeat(66 * 1024) } }), "PAYLOAD_TOO_LARGE"],
    ];
    expect(bad.length).toBeGreaterThanOrEqual(20);
    for (const [frame, code, binary] of bad) {
      const answer = await c.ask(frame, binary === true);
      expect(answer.type).toBe("error");
      expect({ frame: String(JSON.stringify(frame)).slice(0, 60), code: answer.code }).toEqual({
        frame: String(JSON.stringify(frame)).slice(0, 60),
        code: code === "binary" ? "INVALID_REQUEST" : code,
      });
      expect(typeof answer.message).toBe("string");
      expect(c.ws.readyState).toBe(WebSocket.OPEN);
    }
    const refused = await c.ask({ type: "submit", requestId: "r-echo", job: { prompt: "" } });
    expect(refused.requestId).toBe("r-echo");
    expect(decodeFrameWithLua(refused)).toBe("ok error 0 0 0 INVALID_REQUEST");

    c.send({ type: "submit", requestId: "after-bad", job: knight });
    const accepted = await c.next((f) => f.type === "accepted" && f.requestId === "after-bad");
    await c.next((f) => f.type === "completed" && f.id === accepted.id);
    expect((await request(stack.url).get("/health")).status).toBe(200);
    await c.close();
  });
});

describe("upgrade checks and lifecycle", () => {
  it("applies the Host/Origin allow-list to the upgrade and only serves /ws", async () => {
    await expect(Client.open(wsUrl, { Host: "evil.example" })).rejects.toMatchObject({ status: 403 });
    await expect(Client.open(wsUrl, { Origin: "http://evil.example" })).rejects.toMatchObject({ status: 403 });
    await expect(Client.open(wsUrl.replace(/\/ws$/, "/socket"))).rejects.toMatchObject({ status: 404 });
    const port = new URL(stack.url).port;
    const ok = await Client.open(wsUrl, { Origin: `http://localhost:${port}`, Host: `localhost:${port}` });
    expect((await ok.ask({ type: "engines" })).type).toBe("engines");
    await ok.close();
  });

  it("forgets closed clients and their watches", async () => {
    const c = await Client.open();
    c.send({ type: "submit", requestId: "gone", job: { prompt: "gone", width: 256, height: 256, steps: 20, seed: 9 } });
    const { id } = await c.next((f) => f.type === "accepted");
    await c.close();
    await waitFor(async () => stack.service.ws!.clientCount() === 0, 5_000);
    await waitFor(async () => stack.service.events!.watchedJobs() === 0, 5_000);
    await waitFor(async () => ((await request(stack.url).get(`/jobs/${id}`)).body.status === "completed" ? true : undefined));
  });

  it("closes open clients with 1001 when the service shuts down", async () => {
    const local = await startTestStack({}, { api: true, worker: false });
    try {
      const c = await Client.open(local.url.replace(/^http/, "ws") + "/ws");
      const closed = new Promise<number>((resolve) => c.ws.once("close", (code) => resolve(code)));
      await local.service.ws!.close();
      expect(await closed).toBe(1001);
    } finally {
      await local.close();
    }
  });
});
