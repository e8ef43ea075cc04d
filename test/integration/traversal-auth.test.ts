import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import request from "supertest";
import { startTestStack, TestStack } from "../support/stack";

const repo = path.resolve(__dirname, "../..");
const KEY = "s3cret-admin-key";
let stack: TestStack;
let fixtures: string;

beforeAll(async () => {
  fixtures = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-roots-"));
  const models = path.join(fixtures, "models");
  const loras = path.join(fixtures, "loras");
  const outside = path.join(fixtures, "outside");
  fs.cpSync(path.join(repo, "models", "tiny-sd"), path.join(models, "tiny-sd"), { recursive: true });
  fs.cpSync(path.join(repo, "models", "tiny-sd"), path.join(outside, "stolen-model"), { recursive: true });
  fs.mkdirSync(loras, { recursive: true });
  fs.writeFileSync(path.join(outside, "stolen.safetensors"), "not really");
  // symlinks that point out of their roots: registering through them must be refused
  fs.symlinkSync(path.join(outside, "stolen-model"), path.join(models, "escape"));
  fs.symlinkSync(path.join(outside, "stolen.safetensors"), path.join(loras, "escape.safetensors"));
  // a folder inside the root whose component links out: the top level alone looks fine
  fs.cpSync(path.join(repo, "models", "tiny-sd"), path.join(models, "inner-escape"), { recursive: true });
  fs.rmSync(path.join(models, "inner-escape", "unet"), { recursive: true });
  fs.symlinkSync(path.join(outside, "stolen-model", "unet"), path.join(models, "inner-escape", "unet"));
  stack = await startTestStack(
    { PIXELAI_MODELS_DIR: models, PIXELAI_LORAS_DIR: loras, PIXELAI_API_KEY: KEY },
    { api: true, worker: false },
  );
});

afterAll(async () => {
  await stack?.close();
  fs.rmSync(fixtures, { recursive: true, force: true });
});

type Case = [string, () => request.Test, number, string];
const api = () => request(stack.url);
const withKey = (t: request.Test) => t.set("X-API-Key", KEY);
const register = (body: Record<string, unknown>) => withKey(api().post("/models")).send(body);

const cases: Case[] = [
  ["register without key", () => api().post("/models").send({ name: "x", source: "tiny-sd", kind: "base" }), 401, "UNAUTHORIZED"],
  [
    "register with wrong key",
    () => api().post("/models").set("X-API-Key", "nope").send({ name: "x", source: "tiny-sd", kind: "base" }),
    401,
    "UNAUTHORIZED",
  ],
  [
    "register with empty key",
    () => api().post("/models").set("X-API-Key", "").send({ name: "x", source: "tiny-sd", kind: "base" }),
    401,
    "UNAUTHORIZED",
  ],
  [
    "register with key prefix",
    () => api().post("/models").set("X-API-Key", KEY.slice(0, -1)).send({ name: "x", source: "tiny-sd", kind: "base" }),
    401,
    "UNAUTHORIZED",
  ],
  ["default engine without key", () => api().put("/engines/default").send({ engine: "mlx" }), 401, "UNAUTHORIZED"],
  ["default engine with wrong key", () => api().put("/engines/default").set("X-API-Key", "x").send({ engine: "mlx" }), 401, "UNAUTHORIZED"],
  ["conversion without key", () => api().post("/models/tiny-sd/conversions").send({}), 401, "UNAUTHORIZED"],
  [
    "key in query string does not count",
    () => api().post(`/models?apiKey=${KEY}`).send({ name: "x", source: "tiny-sd", kind: "base" }),
    401,
    "UNAUTHORIZED",
  ],
  ["source ..", () => register({ name: "x", source: "..", kind: "base" }), 400, "INVALID_REQUEST"],
  ["source ../outside", () => register({ name: "x", source: "../outside/stolen-model", kind: "base" }), 400, "INVALID_REQUEST"],
  ["source nested ..", () => register({ name: "x", source: "tiny-sd/../../outside/stolen-model", kind: "base" }), 400, "INVALID_REQUEST"],
  [
    "source absolute",
    () => register({ name: "x", source: path.join(fixtures, "outside/stolen-model"), kind: "base" }),
    400,
    "INVALID_REQUEST",
  ],
  ["source /etc/passwd", () => register({ name: "x", source: "/etc/passwd", kind: "lora" }), 400, "INVALID_REQUEST"],
  ["source windows drive", () => register({ name: "x", source: "C:\\Windows\\system32", kind: "base" }), 400, "INVALID_REQUEST"],
  ["source backslash ..", () => register({ name: "x", source: "..\\outside", kind: "base" }), 400, "INVALID_REQUEST"],
  ["source encoded %2e%2e", () => register({ name: "x", source: "%2e%2e/outside/stolen-model", kind: "base" }), 400, "INVALID_REQUEST"],
  ["source with NUL", () => register({ name: "x", source: "tiny-sd\u0000/../..", kind: "base" }), 400, "INVALID_REQUEST"],
  ["source symlink out (model)", () => register({ name: "x", source: "escape", kind: "base" }), 400, "INVALID_REQUEST"],
  ["source with a component linking out", () => register({ name: "x", source: "inner-escape", kind: "base" }), 400, "INVALID_REQUEST"],
  ["source symlink out (lora)", () => register({ name: "x", source: "escape.safetensors", kind: "lora" }), 400, "INVALID_REQUEST"],
  [
    "lora that is not safetensors",
    () => register({ name: "x", source: "../outside/stolen.safetensors", kind: "lora" }),
    400,
    "INVALID_REQUEST",
  ],
  ["name with ..", () => register({ name: "..", source: "tiny-sd", kind: "base" }), 400, "INVALID_REQUEST"],
  ["name with slash", () => register({ name: "a/b", source: "tiny-sd", kind: "base" }), 400, "INVALID_REQUEST"],
  ["name hidden", () => register({ name: ".hidden", source: "tiny-sd", kind: "base" }), 400, "INVALID_REQUEST"],
  ["name too long", () => register({ name: "x".repeat(65), source: "tiny-sd", kind: "base" }), 400, "INVALID_REQUEST"],
  ["name with space", () => register({ name: "con sole", source: "tiny-sd", kind: "base" }), 400, "INVALID_REQUEST"],
  ["name a..b", () => register({ name: "a..b", source: "tiny-sd", kind: "base" }), 400, "INVALID_REQUEST"],
  ["bad kind", () => register({ name: "x", source: "tiny-sd", kind: "vae" }), 400, "INVALID_REQUEST"],
  ["GET model encoded traversal", () => api().get("/models/..%2f..%2fetc%2fpasswd"), 404, "MODEL_NOT_FOUND"],
  ["GET model dot-dot", () => api().get("/models/%2e%2e"), 404, "MODEL_NOT_FOUND"],
  // a '/' makes it a hub id (conversions take installed ones), which the hub's rules refuse before any lookup
  ["convert encoded traversal", () => withKey(api().post("/models/..%2Foutside/conversions")).send({}), 400, "INVALID_REQUEST"],
  ["conversion id traversal", () => api().get("/conversions/..%2F..%2Fetc"), 404, "NOT_FOUND"],
  ["job model traversal", () => api().post("/jobs").send({ prompt: "x", model: "../outside/stolen-model" }), 400, "INVALID_REQUEST"],
  ["job model encoded", () => api().post("/jobs").send({ prompt: "x", model: "%2e%2e%2fx" }), 400, "INVALID_REQUEST"],
  [
    "job lora traversal",
    () =>
      api()
        .post("/jobs")
        .send({ prompt: "x", lora: { name: "../../outside/stolen" } }),
    400,
    "INVALID_REQUEST",
  ],
  [
    "job lora absolute",
    () =>
      api()
        .post("/jobs")
        .send({ prompt: "x", lora: { name: "/etc/passwd" } }),
    400,
    "INVALID_REQUEST",
  ],
];

describe("traversal and auth battery", () => {
  it.each(cases)("%s", async (_name, send, status, code) => {
    const res = await send();
    expect(res.status).toBe(status);
    expect(res.body.error.code).toBe(code);
  });

  it("registered nothing through any of them", async () => {
    const res = await api().get("/models");
    expect(res.body.items.map((m: { name: string }) => m.name)).toEqual(["tiny-sd"]);
  });

  it("accepts the right key for a registration inside the root", async () => {
    const res = await register({ name: "tiny-copy", source: "tiny-sd", kind: "base" });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ name: "tiny-copy", kind: "base", architecture: "sd", engines: ["torch"] });
    // a hub id is installed, as a queued job (src/installs), not registered on the spot
    const hub = await register({ name: "hub-model", source: "someone/pixel-model", kind: "base", architecture: "sdxl" });
    expect(hub.status).toBe(202);
    expect(hub.body).toMatchObject({ name: "hub-model", repo: "someone/pixel-model", status: "queued" });
  });
});
