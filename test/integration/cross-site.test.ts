import net from "node:net";
import request from "supertest";
import WebSocket from "ws";
import { startTestStack, TestStack } from "../support/stack";

/**
 * What a web page in the user's browser can make our server do. Browsers send `Origin` on every cross-origin POST and
 * on every WebSocket upgrade, and send text/plain, form and typeless bodies without asking first (only a JSON body
 * needs a CORS preflight). So: no body but JSON, no Origin but ours or a listed one, never `Origin: null`, and no
 * CORS headers for anyone not listed. An API-only stack with one listed origin.
 */
const LISTED = "http://localhost:4321";
let stack: TestStack;
let port: string;
let host: string;

beforeAll(async () => {
  stack = await startTestStack({ PIXELAI_ALLOWED_ORIGINS: `${LISTED}, https://tools.example` }, { api: true, worker: false });
  port = new URL(stack.url).port;
  host = `localhost:${port}`;
});
afterAll(async () => {
  await stack?.close();
});

const job = { prompt: "a knight", width: 64, height: 64, steps: 2 };
const jobCount = async () => (await request(stack.url).get("/jobs?limit=100")).body.items.length as number;

describe("bodies must be JSON", () => {
  it.each([
    ["a text/plain", "text/plain;charset=UTF-8"],
    ["a form", "application/x-www-form-urlencoded"],
    ["a multipart", "multipart/form-data; boundary=x"],
  ])("%s POST /jobs is refused with 415 and queues nothing", async (_name, type) => {
    const before = await jobCount();
    const res = await request(stack.url).post("/jobs").set("Content-Type", type).send(JSON.stringify(job));
    expect(res.status).toBe(415);
    expect(res.body.error.code).toBe("UNSUPPORTED_MEDIA_TYPE");
    expect(await jobCount()).toBe(before);
  });

  it("a typeless body (a Blob without a type) is refused; a bodyless POST needs no type", async () => {
    const created = await request(stack.url).post("/jobs").send(job);
    expect(created.status).toBe(202);
    const typeless = await rawHttp(
      `POST /jobs/${created.body.id}/cancel HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
    );
    expect(typeless.status).toBe(415);
    expect(JSON.parse(typeless.body).error.code).toBe("UNSUPPORTED_MEDIA_TYPE");
    expect((await request(stack.url).get(`/jobs/${created.body.id}`)).body.status).toBe("queued");
    const bodyless = await rawHttp(
      `POST /jobs/${created.body.id}/cancel HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
    );
    expect(bodyless.status).toBe(202);
  });

  it("legacy routes take what the old extension sends (application/json) and refuse text/plain in their shape", async () => {
    const before = (await request(stack.url).get("/health")).body.current_model;
    const res = await request(stack.url)
      .post("/load_model")
      .set("Content-Type", "text/plain")
      .send(JSON.stringify({ model_name: "tiny-sdxl" }));
    expect(res.status).toBe(415);
    expect(res.body).toMatchObject({ success: false, code: "UNSUPPORTED_MEDIA_TYPE" });
    expect((await request(stack.url).get("/health")).body.current_model).toBe(before);
    const queued = await request(stack.url).post("/jobs").send(job);
    const json = await request(stack.url).post(`/cancel/${queued.body.id}`).set("Content-Type", "application/json").send("{}");
    expect(json.status).toBe(202);
    expect(json.body).toMatchObject({ success: true, job_status: "cancelled" });
  });
});

describe("Origin", () => {
  it.each([
    ["Origin: null (sandboxed iframe, data: URL)", "null"],
    ["another local web app on another port", "http://localhost:3000"],
    ["our host name over https on our port (another scheme)", `https://localhost:${port}`],
    ["a foreign site", "http://evil.example"],
  ])("%s cannot queue, cancel or change the default model", async (_name, origin) => {
    const before = await jobCount();
    const post = await request(stack.url).post("/jobs").set("Host", host).set("Origin", origin).send(job);
    expect(post.status).toBe(403);
    expect(post.body.error.code).toBe("FORBIDDEN");
    const legacy = await request(stack.url).post("/load_model").set("Host", host).set("Origin", origin).send({ model_name: "tiny-sdxl" });
    expect(legacy.status).toBe(403);
    expect(legacy.body).toMatchObject({ success: false, code: "FORBIDDEN" });
    const setDefault = await request(stack.url).put("/models/default").set("Host", host).set("Origin", origin).send({ model: "tiny-sdxl" });
    expect(setDefault.status).toBe(403);
    expect(await jobCount()).toBe(before);
    expect(post.headers["access-control-allow-origin"]).toBeUndefined();
  });

  it("our own pages (Swagger UI) and a listed origin may act; only the listed one gets CORS headers", async () => {
    const own = await request(stack.url).post("/jobs").set("Host", host).set("Origin", `http://${host}`).send(job);
    expect(own.status).toBe(202);
    expect(own.headers["access-control-allow-origin"]).toBeUndefined();
    const listed = await request(stack.url).post("/jobs").set("Host", host).set("Origin", LISTED).send(job);
    expect(listed.status).toBe(202);
    expect(listed.headers["access-control-allow-origin"]).toBe(LISTED);
    expect(listed.headers.vary).toMatch(/Origin/);
    const preflight = await request(stack.url)
      .options("/jobs")
      .set("Host", host)
      .set("Origin", LISTED)
      .set("Access-Control-Request-Method", "POST")
      .set("Access-Control-Request-Headers", "content-type");
    expect(preflight.status).toBe(204);
    expect(preflight.headers["access-control-allow-headers"]).toMatch(/Content-Type/);
    // the listed origin is compared with its port: the same host on another port is another site
    const samehostOtherPort = await request(stack.url).post("/jobs").set("Host", host).set("Origin", "http://localhost:4322").send(job);
    expect(samehostOtherPort.status).toBe(403);
  });

  it("the WebSocket upgrade refuses Origin: null and another port, and accepts our own and a listed origin", async () => {
    const wsUrl = `${stack.url.replace(/^http/, "ws")}/ws`;
    for (const origin of ["null", "http://localhost:3000", "http://evil.example"]) {
      expect(await upgradeStatus(wsUrl, { Host: host, Origin: origin })).toBe(403);
    }
    expect(await upgradeStatus(wsUrl, { Host: host, Origin: `http://${host}` })).toBe(101);
    expect(await upgradeStatus(wsUrl, { Host: host, Origin: LISTED })).toBe(101);
    expect(await upgradeStatus(wsUrl, { Host: host })).toBe(101); // Aseprite sends no Origin
  });
});

describe("errors the server itself produces are JSON with a code", () => {
  it.each([
    ["a request without Host", () => `GET /health HTTP/1.1\r\nConnection: close\r\n\r\n`, 400, "INVALID_REQUEST"],
    ["bad framing", () => `GET /health HTTP/1.1\r\nHost: ${host}\r\nContent-Length: x\r\n\r\n`, 400, "INVALID_REQUEST"],
    ["not HTTP at all", () => `\u0016\u0003\u0001garbage\r\n\r\n`, 400, "INVALID_REQUEST"],
    [
      "headers over Node's limit",
      () => `GET /health HTTP/1.1\r\nHost: ${host}\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`,
      431,
      "HEADERS_TOO_LARGE",
    ],
    ["a write to the read-only queue board", () => boardPut(), 405, "METHOD_NOT_ALLOWED"],
  ])("%s", async (_name, raw, status, code) => {
    const res = await rawHttp(raw());
    expect(res.status).toBe(status);
    expect(res.headers["content-type"]).toMatch(/application\/json/);
    expect(JSON.parse(res.body).error.code).toBe(code);
  });
});

function boardPut(): string {
  return `PUT /admin/queues/api/queues/generate/retry/failed HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`;
}

function upgradeStatus(url: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.once("open", () => {
      ws.close();
      resolve(101);
    });
    ws.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
    ws.once("error", reject);
  });
}

/** One request written byte for byte (supertest cannot send broken HTTP), read to the close. */
function rawHttp(text: string): Promise<{ status: number; headers: Record<string, string>; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), "127.0.0.1", () => socket.write(text));
    const chunks: Buffer[] = [];
    socket.on("data", (c) => {
      chunks.push(c);
      const seen = Buffer.concat(chunks).toString("latin1");
      // keep-alive answers do not close: stop once the announced body is all here
      const head = seen.indexOf("\r\n\r\n");
      const length = /content-length: (\d+)/i.exec(seen.slice(0, head));
      if (head >= 0 && length && seen.length >= head + 4 + Number(length[1])) socket.end();
    });
    socket.on("error", reject);
    socket.on("close", () => {
      const all = Buffer.concat(chunks).toString("utf8");
      const [head, ...rest] = all.split("\r\n\r\n");
      const [statusLine, ...lines] = head.split("\r\n");
      const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
      resolve({ status: Number(statusLine.split(" ")[1]), headers, body: rest.join("\r\n\r\n") });
    });
  });
}
