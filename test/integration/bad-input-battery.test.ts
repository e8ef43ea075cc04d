import request from "supertest";
import WebSocket from "ws";
import { ERROR_CODES, isErrorCode } from "../../src/backends/error-codes";
import { startTestStack, TestStack } from "../support/stack";

/**
 * A generated battery of bad input: for every operation of the live /openapi.json, bodies, query and path parameters
 * that break the spec one field at a time, plus hand-written cases, the legacy routes and /ws frames. Each must be
 * refused with a 4xx carrying a taxonomy code (WS: an `error` frame with one), none may be a 5xx or go unanswered, and
 * the server must still serve a valid request afterwards. An API-only stack: nothing here should ever reach a worker.
 */
jest.setTimeout(120_000);

type Schema = {
  $ref?: string;
  type?: string;
  format?: string;
  enum?: unknown[];
  anyOf?: Schema[];
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean | Schema;
  items?: Schema;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  nullable?: boolean;
  "x-nullable"?: boolean;
};
interface Parameter {
  in: "query" | "path" | "header";
  name: string;
  required?: boolean;
  schema: Schema;
}
interface Operation {
  parameters?: Parameter[];
  requestBody?: { content: Record<string, { schema: Schema }> };
}
interface Spec {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Schema> };
}

/** A valid 1×1 opaque PNG (base64): image fields whose fault lies elsewhere in the request. */
const TINY_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/** Past the 64 KiB body limit: must be 413 PAYLOAD_TOO_LARGE, not a crash or a hang. */
const HUGE = 70_000;
/** BAD_INPUT_VERBOSE=1 prints every case with its answer. */
const VERBOSE = process.env.BAD_INPUT_VERBOSE === "1";

let stack: TestStack;
let spec: Spec;
beforeAll(async () => {
  // the submit limit runs ahead of validation (rate-limit.ts): high, so every case reaches the code under test
  // the queued cap is small so the battery can reach it (the jobs it queues for that are cancelled again)
  stack = await startTestStack({ PIXELAI_RATE_LIMIT_PER_MIN: "1000000", PIXELAI_MAX_QUEUED_PER_CLIENT: "2" }, { api: true, worker: false });
  spec = (await request(stack.url).get("/openapi.json")).body as Spec;
});
afterAll(async () => {
  await stack?.close();
});

function deref(s: Schema): Schema {
  let out = s;
  while (out.$ref) out = spec.components.schemas[out.$ref.split("/").pop()!];
  return out;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * Does `v` satisfy the schema? Only what the spec states (tsoa validates by it); used to keep generated cases that
 * are truly invalid, so a case that happens to be valid is never sent (it would queue real work).
 */
function conforms(schema: Schema, v: unknown): boolean {
  const s = deref(schema);
  if (s.anyOf) return s.anyOf.some((alt) => conforms(alt, v));
  if (v === null) return s.nullable === true || s["x-nullable"] === true;
  if (s.enum) return s.enum.includes(v);
  switch (s.type) {
    case "string":
      return (
        typeof v === "string" &&
        v.length >= (s.minLength ?? 0) &&
        v.length <= (s.maxLength ?? Infinity) &&
        (!s.pattern || new RegExp(s.pattern).test(v))
      );
    case "integer":
    case "number":
      return (
        typeof v === "number" &&
        Number.isFinite(v) &&
        (s.type === "number" || Number.isInteger(v)) &&
        v >= (s.minimum ?? -Infinity) &&
        v <= (s.maximum ?? Infinity)
      );
    case "boolean":
      return typeof v === "boolean";
    case "array":
      return Array.isArray(v) && (!s.items || v.every((item) => conforms(s.items!, item)));
    case "object": {
      if (!isPlainObject(v)) return false;
      const props = s.properties ?? {};
      if ((s.required ?? []).some((r) => !(r in v))) return false;
      for (const [k, value] of Object.entries(v)) {
        if (props[k]) {
          if (!conforms(props[k], value)) return false;
        } else if (s.additionalProperties === false) return false;
      }
      return true;
    }
    default:
      return true; // a schema this checker does not understand: treat as valid, so no case is built on it
  }
}

/** The smallest valid instance: required fields only, each at its simplest valid value. */
function validInstance(schema: Schema): unknown {
  const s = deref(schema);
  if (s.anyOf) return validInstance(s.anyOf[0]);
  if (s.enum) return s.enum[0];
  switch (s.type) {
    case "string":
      return s.pattern ? "a" : "x".repeat(Math.max(1, s.minLength ?? 1));
    case "integer":
    case "number":
      return s.minimum ?? 1;
    case "boolean":
      return false;
    case "array":
      return [];
    default: {
      const out: Record<string, unknown> = {};
      for (const r of s.required ?? []) out[r] = validInstance(s.properties![r]);
      return out;
    }
  }
}

/** Invalid values for one schema: wrong types, just-out-of-range, too long/short, bad enum/pattern, bad nested objects. */
function badValues(schema: Schema, depth = 0): unknown[] {
  const s = deref(schema);
  const out: unknown[] = [null, true, 0, -1, 42, 1.5, "", "bogus", {}, [], ["x"]];
  if (s.type === "integer" || s.type === "number") {
    if (s.minimum !== undefined) out.push(s.minimum - 1, s.minimum - 0.5);
    if (s.maximum !== undefined) out.push(s.maximum + 1, s.maximum + 0.5);
    out.push(2 ** 31, 2 ** 53 + 2, 1e308, -1e308, String(s.minimum ?? 1));
  }
  if (s.type === "string") {
    if (s.maxLength !== undefined) out.push("x".repeat(s.maxLength + 1));
    out.push("x".repeat(HUGE));
  }
  if (s.pattern) out.push("../etc", "/etc/passwd", "a b", "-lead", "a\u0000b", "é", "x".repeat(65));
  if (s.enum) for (const e of s.enum) if (typeof e === "string") out.push(e.toUpperCase(), ` ${e}`, `${e}\u0000`);
  if (s.anyOf) for (const alt of s.anyOf) if (depth < 2) out.push(...badValues(alt, depth + 1));
  if (s.type === "object" && s.properties && depth < 2) {
    const base = validInstance(s) as Record<string, unknown>;
    out.push({ ...base, unknownField: 1 });
    for (const r of s.required ?? []) {
      const missing = { ...base };
      delete missing[r];
      out.push(missing);
    }
    for (const [k, prop] of Object.entries(s.properties)) for (const bad of badValues(prop, depth + 1)) out.push({ ...base, [k]: bad });
  }
  const seen = new Set<string>();
  return out.filter((v) => {
    const key = JSON.stringify(v);
    if (seen.has(key) || conforms(s, v)) return false;
    seen.add(key);
    return true;
  });
}

/** Query strings that break a parameter's schema once coerced the way tsoa reads query values. */
function badQueryValues(schema: Schema): string[] {
  const s = deref(schema);
  const candidates = ["bogus", "-1", "0", "1.5", "1e999", "NaN", "true", "null", "[]", "x".repeat(3000), "%00", "%FF"];
  if (s.minimum !== undefined) candidates.push(String(s.minimum - 1));
  if (s.maximum !== undefined) candidates.push(String(s.maximum + 1), String(2 ** 53 + 2));
  if (s.enum) for (const e of s.enum) candidates.push(String(e).toUpperCase(), `${String(e)}x`);
  const coerce = (raw: string): unknown => {
    let v: string;
    try {
      v = decodeURIComponent(raw);
    } catch {
      return Symbol("undecodable"); // conforms to nothing: the case is kept
    }
    if (s.type === "integer" || s.type === "number") return v.trim() === "" ? NaN : Number(v);
    // tsoa reads "true"/"false" (and, in some versions, 1/0) as booleans: those are not sent as bad values
    if (s.type === "boolean") return ["true", "1"].includes(v) ? true : ["false", "0"].includes(v) ? false : v;
    return v;
  };
  return [...new Set(candidates)].filter((raw) => !conforms(s, coerce(raw)));
}

/** Path parameter values that name nothing or cannot name anything. */
const BAD_PATH_VALUES = [
  "no-such-thing",
  "..",
  "..%2f..%2fetc%2fpasswd",
  "%2e%2e",
  "a%00b",
  "%",
  "%E0%A4%A",
  "x".repeat(3000),
  "%20",
  "ü",
  "01aaaaaaaaaaaaaaaaaaaaaaaa",
  "null",
  "-1",
];

interface Tally {
  cases: number;
  c4xx: number;
  c5xx: number;
  other: number;
  failures: string[];
}
const tally = (): Tally => ({ cases: 0, c4xx: 0, c5xx: 0, other: 0, failures: [] });
const rest = tally();
const legacy = tally();
const ws = tally();

const short = (v: unknown) => {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}…(${s.length})` : s;
};

/** Counts one HTTP answer; `shape` checks the error body (v1 or legacy). */
function record(
  t: Tally,
  name: string,
  res: { status: number; headers: Record<string, string>; body: unknown } | Error,
  shape: (body: any) => string | undefined,
) {
  t.cases++;
  if (res instanceof Error) {
    t.other++;
    t.failures.push(`${name}: no answer (${res.message})`);
    return;
  }
  if (res.status >= 500) t.c5xx++;
  else if (res.status >= 400) t.c4xx++;
  else t.other++;
  const problem =
    res.status < 400 || res.status >= 500
      ? `status ${res.status}`
      : !/application\/json/.test(res.headers["content-type"] ?? "")
        ? `content-type ${res.headers["content-type"]}`
        : shape(res.body);
  if (problem) t.failures.push(`${name}: ${problem} ${short(res.body)}`);
  if (VERBOSE) console.log(`${res.status} ${short(res.body)} ← ${name}`);
}

/** v1 error body: {error:{code, message}} with a taxonomy code whose status is the one answered. */
const v1Shape = (status: number) => (body: any) => {
  const code = body?.error?.code;
  if (!isErrorCode(code)) return `code ${short(code)} not in the taxonomy`;
  if (ERROR_CODES[code] !== status) return `code ${code} is ${ERROR_CODES[code]}, answered ${status}`;
  return typeof body.error.message === "string" ? undefined : "no message";
};
/** The seed server's error shape: {success:false, error, code}. */
const legacyShape = (status: number) => (body: any) => {
  if (body?.success !== false || typeof body?.error !== "string") return "not {success:false, error}";
  if (!isErrorCode(body.code)) return `code ${short(body.code)} not in the taxonomy`;
  return ERROR_CODES[body.code as keyof typeof ERROR_CODES] === status ? undefined : `code ${body.code} answered with ${status}`;
};

async function send(
  method: string,
  path: string,
  body?: string | Buffer,
  contentType = "application/json",
  headers: Record<string, string> = {},
) {
  try {
    let req = (request(stack.url) as any)[method](path).timeout(10_000).set(headers);
    if (body !== undefined) req = req.set("Content-Type", contentType).send(body);
    return await req;
  } catch (err) {
    return (err as { response?: unknown }).response ?? (err as Error);
  }
}

async function restCase(name: string, method: string, path: string, body?: string | Buffer, contentType?: string): Promise<void> {
  const res = await send(method, path, body, contentType);
  record(rest, name, res, v1Shape(res.status));
}

function fillPath(path: string, value = "no-such-thing"): string {
  return path.replace(/\{[^}]+\}/g, value);
}

function report(label: string, t: Tally): void {
  console.log(`[bad-input] ${label}: ${JSON.stringify({ cases: t.cases, "4xx": t.c4xx, "5xx": t.c5xx, other: t.other })}`);
  if (t.failures.length) console.log(`[bad-input] ${label} failures:\n${t.failures.slice(0, 40).join("\n")}`);
}

describe("REST, generated from /openapi.json", () => {
  it("refuses every bad body, query and path parameter with a 4xx taxonomy error", async () => {
    const valid: Record<string, string> = { "/models/{name}/conversions": "tiny-sd" }; // a real model: only the body is wrong
    for (const [path, ops] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const bodySchema = op.requestBody?.content["application/json"]?.schema;
        const pathParams = (op.parameters ?? []).filter((p) => p.in === "path");
        if (bodySchema) {
          const target = fillPath(path, valid[path]);
          for (const bad of badValues(bodySchema))
            await restCase(`${method.toUpperCase()} ${path} body=${short(bad)}`, method, target, JSON.stringify(bad));
        }
        for (const p of (op.parameters ?? []).filter((x) => x.in === "query")) {
          for (const bad of badQueryValues(p.schema))
            await restCase(`${method.toUpperCase()} ${path}?${p.name}=${short(bad)}`, method, `${fillPath(path)}?${p.name}=${bad}`);
        }
        const body = bodySchema ? JSON.stringify(validInstance(bodySchema)) : undefined;
        if (pathParams.length > 0) {
          // a bad path with an otherwise valid body: must be refused for the path, never acted on
          for (const bad of BAD_PATH_VALUES)
            await restCase(`${method.toUpperCase()} ${path} with ${short(bad)}`, method, fillPath(path, bad), body);
        }
      }
    }

    // by hand: what a schema cannot express, and malformed requests the generator cannot build
    const hand: Array<[string, string, string, string?, string?]> = [
      ["malformed JSON", "post", "/jobs", '{"prompt": "a",'],
      ["trailing garbage", "post", "/jobs", '{"prompt": "a"} x'],
      ["empty body", "post", "/jobs", ""],
      ["JSON null", "post", "/jobs", "null"],
      ["text/plain garbage", "post", "/jobs", "prompt=a", "text/plain"],
      ["form encoded", "post", "/jobs", "prompt=a&width=64", "application/x-www-form-urlencoded"],
      ["utf-16 charset", "post", "/jobs", '{"prompt":"a"}', "application/json; charset=utf-16"],
      ["deep nesting", "post", "/jobs", `${"[".repeat(5000)}${"]".repeat(5000)}`],
      ["deep object", "post", "/jobs", `${'{"a":'.repeat(2000)}1${"}".repeat(2000)}`],
      ["huge body", "post", "/jobs", JSON.stringify({ prompt: "x".repeat(200_000) })],
      ["constructor field", "post", "/jobs", '{"prompt":"a","constructor":{"prototype":{"x":1}}}'],
      ["__proto__ field", "post", "/jobs", '{"prompt":"a","__proto__":{"isAdmin":true}}'],
      ["blank prompt", "post", "/jobs", '{"prompt":"  \\n\\t "}'],
      ["width not a multiple of 8", "post", "/jobs", '{"prompt":"a","width":100}'],
      ["removeBackground true", "post", "/jobs", '{"prompt":"a","removeBackground":true}'],
      ["unknown model", "post", "/jobs", '{"prompt":"a","model":"no-such-model"}'],
      ["model traversal", "post", "/jobs", '{"prompt":"a","model":"../../etc"}'],
      ["unknown lora", "post", "/jobs", '{"prompt":"a","lora":{"name":"nope"}}'],
      ["duplicate keys, last invalid", "post", "/jobs", '{"prompt":"a","width":64,"width":"64"}'],
      ["priority above the default without the admin key", "post", "/jobs", '{"prompt":"a","priority":1}'],
      ["width × height × steps over the bound", "post", "/jobs", '{"prompt":"a","width":2048,"height":2048,"steps":150}'],
      ["over the bound through a preset's size", "post", "/jobs", '{"prompt":"a","preset":"pixel-art-xl","steps":150}'],
      ["repeated status", "get", "/jobs?status=queued&status=failed"],
      ["repeated limit", "get", "/jobs?limit=1&limit=2"],
      ["cursor injection", "get", "/jobs?cursor=%27%20OR%201%3D1--"],
      ["cursor too long", "get", `/jobs?cursor=${"a".repeat(5000)}`],
      ["cursor NUL", "get", "/jobs?cursor=a%00b"],
      ["unknown route", "get", "/nope"],
      ["wrong method", "put", "/jobs", "{}"],
      ["patch job", "patch", "/jobs/x", "{}"],
      ["image of unknown job", "get", "/jobs/01aaaaaaaaaaaaaaaaaaaaaaaa/image"],
      ["events of unknown job", "get", "/jobs/01aaaaaaaaaaaaaaaaaaaaaaaa/events"],
      ["register model traversal", "post", "/models", '{"name":"x","source":"../../etc","kind":"base"}'],
      ["register model absolute", "post", "/models", '{"name":"x","source":"/etc/passwd","kind":"base"}'],
      ["register model missing file", "post", "/models", '{"name":"x","source":"no-such-dir","kind":"base"}'],
      ["conversion of a LoRA name that does not exist", "post", "/models/no-such/conversions", "{}"],
      ["strength without an image", "post", "/jobs", '{"prompt":"a","strength":0.5}'],
      ["mask without an image", "post", "/jobs", '{"prompt":"a","mask":"iVBORw0KGgo="}'],
      ["strength on a pixelize job", "post", "/jobs", `{"inputImage":"${TINY_PNG}","pixel":{"width":1,"height":1},"strength":0.2}`],
      ["raw RGBA one byte short", "post", "/jobs", '{"prompt":"a","inputImage":{"width":1,"height":1,"rgba":"AAAA"}}'],
      ["raw RGBA not base64", "post", "/jobs", '{"prompt":"a","inputImage":{"width":1,"height":1,"rgba":"!!!!!!!!"}}'],
      [
        "mask of another size",
        "post",
        "/jobs",
        `{"prompt":"a","inputImage":"${TINY_PNG}","mask":{"width":2,"height":1,"rgba":"AAAAAAAAAAA="}}`,
      ],
      ["mask not a PNG", "post", "/jobs", `{"prompt":"a","inputImage":"${TINY_PNG}","mask":"R0lGODlhAQABAAAAACw="}`],
    ];
    for (const [name, method, path, body, type] of hand) await restCase(name, method, path, body, type);
    // what a web page can send: a typeless or non-JSON body, or a JSON one from an origin that is not ours
    const host = `localhost:${new URL(stack.url).port}`;
    const fromPages: Array<[string, string, string, string | undefined, string | undefined, Record<string, string>]> = [
      ["multipart body", "post", "/jobs", "--x--", "multipart/form-data; boundary=x", {}],
      ["text/plain cancel", "post", "/jobs/01aaaaaaaaaaaaaaaaaaaaaaaa/cancel", "{}", "text/plain", {}],
      ["text/plain default model", "put", "/models/default", '{"model":"tiny-sd"}', "text/plain", {}],
      ["text/plain delete", "delete", "/jobs/01aaaaaaaaaaaaaaaaaaaaaaaa", "{}", "text/plain", {}],
      ["Origin null", "post", "/jobs", '{"prompt":"a"}', undefined, { Host: host, Origin: "null" }],
      ["Origin on another port", "post", "/jobs", '{"prompt":"a"}', undefined, { Host: host, Origin: "http://localhost:1" }],
      ["Origin null, default engine", "put", "/engines/default", '{"engine":"torch"}', undefined, { Host: host, Origin: "null" }],
      ["Origin not a URL", "post", "/jobs", '{"prompt":"a"}', undefined, { Host: host, Origin: "::::" }],
      ["Origin file:", "post", "/jobs", '{"prompt":"a"}', undefined, { Host: host, Origin: "file://" }],
      ["board write", "post", "/admin/queues/api/queues/generate/clean/failed", undefined, undefined, {}],
    ];
    for (const [name, method, path, body, type, headers] of fromPages) {
      const res = await send(method, path, body, type, headers);
      record(rest, name, res, v1Shape(res.status));
    }
    await restCase(
      "invalid utf-8",
      "post",
      "/jobs",
      Buffer.concat([Buffer.from('{"prompt": '), Buffer.from([0xff, 0xfe]), Buffer.from("}")]),
    );

    // Refusals that need a queued job first: a repeated idempotency key with another body, and the per-client cap
    // (2 in this stack). The jobs queued for them are cancelled again, so nothing is left for a worker.
    const fairJob = { prompt: "fair use", width: 64, height: 64, steps: 1 };
    const first = await request(stack.url)
      .post("/jobs")
      .send({ ...fairJob, idempotencyKey: "battery-key" });
    expect(first.status).toBe(202);
    const fairUse: Array<[string, string, string, string]> = [
      [
        "idempotencyKey again with another body",
        "/jobs",
        JSON.stringify({ ...fairJob, seed: 5, idempotencyKey: "battery-key" }),
        "IDEMPOTENCY_CONFLICT",
      ],
    ];
    const second = await request(stack.url).post("/jobs").send(fairJob);
    expect(second.status).toBe(202);
    fairUse.push(
      ["a third job queued by one client (cap 2)", "/jobs", JSON.stringify(fairJob), "TOO_MANY_QUEUED"],
      [
        "/generate with the client's queue full",
        "/generate",
        JSON.stringify({ prompt: "a knight", width: 64, height: 64, steps: 4 }),
        "TOO_MANY_QUEUED",
      ],
    );
    for (const [name, path, body, code] of fairUse) {
      const res = await send("post", path, body);
      const isLegacy = path === "/generate";
      record(isLegacy ? legacy : rest, name, res, (b) => {
        const problem = (isLegacy ? legacyShape : v1Shape)(res.status)(b);
        const got = isLegacy ? b?.code : b?.error?.code;
        return problem ?? (got === code ? undefined : `code ${got}, expected ${code}`);
      });
    }
    for (const id of [first.body.id, second.body.id]) expect((await request(stack.url).post(`/jobs/${id}/cancel`)).status).toBe(202);

    report("REST", rest);
    expect(rest.failures).toEqual([]);
    expect(rest.c5xx).toBe(0);
    expect(rest.cases).toBeGreaterThanOrEqual(200);
  });
});

describe("legacy routes", () => {
  it("refuse bad bodies and ids in the seed server's error shape", async () => {
    const ok = { prompt: "a knight", width: 64, height: 64, steps: 4 };
    const generate: unknown[] = [
      {},
      { prompt: "" },
      { prompt: 42 },
      { prompt: ["a"] },
      { ...ok, negative_prompt: 5 },
      { ...ok, width: "abc" },
      { ...ok, width: 4096 },
      { ...ok, width: 2049 }, // not a multiple of 8: rounded up (the old client's 1600×900), here past the limit
      { ...ok, width: -64 },
      { ...ok, width: "64.5" },
      { ...ok, height: {} },
      { ...ok, steps: 0 },
      { ...ok, steps: "many" },
      { ...ok, steps: 1e9 },
      { ...ok, guidance_scale: "x" },
      { ...ok, guidance_scale: 99 },
      { ...ok, seed: "x" },
      { ...ok, seed: 1.5 },
      { ...ok, seed: 2 ** 40 },
      { ...ok, lora_model: 5 },
      { ...ok, lora_model: {} },
      { ...ok, lora_model: "no-such-lora" },
      { ...ok, lora_model: "../../etc/passwd" },
      { ...ok, lora_model: "loras/x.safetensors", lora_strength: 99 },
      { ...ok, lora_model: "loras/x.safetensors", lora_strength: "strong" },
      { ...ok, remove_background: "x" },
      { ...ok, remove_background: 5 },
      { ...ok, pixel_width: 32 },
      { ...ok, pixel_height: 32, pixel_width: 0 },
      { ...ok, pixel_width: "x", pixel_height: 32 },
      { ...ok, pixel_width: 32, pixel_height: 32, colors: 999 },
      { ...ok, pixel_width: 32, pixel_height: 32, colors: "lots" },
      { ...ok, pixel_width: 32, pixel_height: 32, fit_mode: "squash" },
      { ...ok, fit_mode: "squash" },
      { ...ok, preserve_aspect: "yes" },
      { ...ok, prompt: "x".repeat(2001) },
      { ...ok, width: 2048, height: 2048, steps: 150 }, // width × height × steps over PIXELAI_MAX_PIXEL_STEPS
      [ok],
      "a knight",
      42,
    ];
    const cases: Array<[string, string, string, string?]> = generate.map((b) => [
      `/generate ${short(b)}`,
      "post",
      "/generate",
      JSON.stringify(b),
    ]);
    cases.push(
      ["/generate malformed", "post", "/generate", '{"prompt":'],
      ["/generate null", "post", "/generate", "null"],
      ["/generate huge", "post", "/generate", JSON.stringify({ prompt: "x".repeat(HUGE) })],
      ["/set_engine empty", "post", "/set_engine", "{}"],
      ["/set_engine unknown", "post", "/set_engine", '{"engine":"tensorflow"}'],
      ["/set_engine number", "post", "/set_engine", '{"engine":5}'],
      ["/set_engine null", "post", "/set_engine", '{"engine":null}'],
      ["/set_engine upper", "post", "/set_engine", '{"engine":"TORCH"}'],
      ["/set_engine array", "post", "/set_engine", '["torch"]'],
      ["/set_engine string", "post", "/set_engine", '"torch"'],
      ["/set_engine malformed", "post", "/set_engine", "{engine: torch}"],
      ["/load_model empty", "post", "/load_model", "{}"],
      ["/load_model number", "post", "/load_model", '{"model_name":5}'],
      ["/load_model blank", "post", "/load_model", '{"model_name":""}'],
      ["/load_model unknown", "post", "/load_model", '{"model_name":"no-such-model"}'],
      ["/load_model traversal", "post", "/load_model", '{"model_name":"../../etc"}'],
      ["/load_model array", "post", "/load_model", "[1]"],
      ["/load_model malformed", "post", "/load_model", "{"],
    );
    for (const id of ["x", "..", "%2e%2e%2fetc", "a%00b", "%", "x".repeat(3000), "01aaaaaaaaaaaaaaaaaaaaaaaa"]) {
      cases.push([`/progress/${short(id)}`, "get", `/progress/${id}`], [`/cancel/${short(id)}`, "post", `/cancel/${id}`, "{}"]);
    }
    for (const body of ["{", "[]x", "null"]) cases.push([`/cancel bad body ${body}`, "post", "/cancel/x", body]);
    const typed: Array<[string, string, string, string]> = [
      ["/generate text/plain", "/generate", JSON.stringify(ok), "text/plain"],
      ["/load_model form", "/load_model", "model_name=tiny-sd", "application/x-www-form-urlencoded"],
      ["/set_engine text/plain", "/set_engine", '{"engine":"torch"}', "text/plain;charset=UTF-8"],
      ["/cancel multipart", "/cancel/x", "--x--", "multipart/form-data; boundary=x"],
    ];
    for (const [name, path, body, type] of typed) {
      const res = await send("post", path, body, type);
      record(legacy, name, res, legacyShape(res.status));
    }

    for (const [name, method, path, body] of cases) {
      const res = await send(method, path, body);
      // the seed's paths answer in its shape; a 404 from a path the legacy router never matched is the v1 one
      record(legacy, name, res, (b) => (b?.success === false ? legacyShape(res.status)(b) : v1Shape(res.status)(b)));
    }
    report("legacy", legacy);
    expect(legacy.failures).toEqual([]);
    expect(legacy.c5xx).toBe(0);
  });
});

describe("WebSocket frames", () => {
  it("answers every bad frame with an error frame carrying a taxonomy code, and the connection stays open", async () => {
    const socket = new WebSocket(`${stack.url.replace(/^http/, "ws")}/ws`);
    await new Promise((resolve, reject) => {
      socket.once("open", resolve);
      socket.once("error", reject);
    });
    const frames: Array<Record<string, any>> = [];
    socket.on("message", (data, isBinary) => frames.push(isBinary ? { type: "binary!" } : JSON.parse(String(data))));

    const jobSchema = spec.paths["/jobs"].post.requestBody!.content["application/json"].schema;
    const cases: Array<[string, string | Buffer]> = [
      ["not JSON", "hello"],
      ["truncated JSON", '{"type":"submit"'],
      ["empty text", ""],
      ["array", "[]"],
      ["array of frames", JSON.stringify([{ type: "engines" }])],
      ["number", "42"],
      ["null", "null"],
      ["string", '"submit"'],
      ["no type", "{}"],
      ["type number", '{"type":5}'],
      ["unknown type", '{"type":"explode"}'],
      ["type upper", '{"type":"SUBMIT"}'],
      ["type with NUL", '{"type":"submit\\u0000"}'],
      ["submit without requestId", JSON.stringify({ type: "submit", job: { prompt: "a" } })],
      ["submit blank requestId", JSON.stringify({ type: "submit", requestId: "", job: { prompt: "a" } })],
      ["submit numeric requestId", JSON.stringify({ type: "submit", requestId: 5, job: { prompt: "a" } })],
      ["submit long requestId", JSON.stringify({ type: "submit", requestId: "r".repeat(201), job: { prompt: "a" } })],
      ["submit without job", JSON.stringify({ type: "submit", requestId: "r" })],
      ["submit semantic: width 100", JSON.stringify({ type: "submit", requestId: "r", job: { prompt: "a", width: 100 } })],
      ["submit semantic: blank prompt", JSON.stringify({ type: "submit", requestId: "r", job: { prompt: "   " } })],
      ["submit semantic: unknown model", JSON.stringify({ type: "submit", requestId: "r", job: { prompt: "a", model: "no-such-model" } })],
      [
        "submit semantic: priority above the default",
        JSON.stringify({ type: "submit", requestId: "r", job: { prompt: "a", priority: 1 } }),
      ],
      [
        "submit semantic: over the size bound",
        JSON.stringify({ type: "submit", requestId: "r", job: { prompt: "a", width: 2048, height: 2048, steps: 150 } }),
      ],
      ["submit semantic: unknown lora", JSON.stringify({ type: "submit", requestId: "r", job: { prompt: "a", lora: { name: "nope" } } })],
      ["cancel without id", '{"type":"cancel"}'],
      ["cancel numeric id", '{"type":"cancel","id":5}'],
      ["cancel unknown id", '{"type":"cancel","id":"01aaaaaaaaaaaaaaaaaaaaaaaa"}'],
      ["cancel traversal id", '{"type":"cancel","id":"../../etc"}'],
      ["subscribe without id", '{"type":"subscribe"}'],
      ["subscribe unknown id", '{"type":"subscribe","id":"nope"}'],
      ["subscribe long id", JSON.stringify({ type: "subscribe", id: "x".repeat(5000) })],
      ["oversized frame", JSON.stringify({ type: "submit", requestId: "r", job: { prompt: "x".repeat(HUGE) } })],
      ["binary JSON", Buffer.from(JSON.stringify({ type: "engines" }))],
      ["binary bytes", Buffer.from([0, 1, 2, 255, 254])],
    ];
    for (const bad of badValues(jobSchema))
      cases.push([`submit job=${short(bad)}`, JSON.stringify({ type: "submit", requestId: "gen", job: bad })]);

    for (const [name, data] of cases) {
      const from = frames.length;
      socket.send(data, { binary: Buffer.isBuffer(data) });
      const deadline = Date.now() + 10_000;
      while (frames.length === from && Date.now() < deadline && socket.readyState === WebSocket.OPEN)
        await new Promise((r) => setTimeout(r, 2));
      ws.cases++;
      const frame = frames[from];
      const status = isErrorCode(frame?.code) ? ERROR_CODES[frame.code as keyof typeof ERROR_CODES] : 0;
      if (status >= 500) ws.c5xx++;
      else if (status >= 400) ws.c4xx++;
      else ws.other++;
      if (socket.readyState !== WebSocket.OPEN) ws.failures.push(`${name}: the connection closed`);
      else if (!frame) ws.failures.push(`${name}: no answer`);
      else if (frame.type !== "error" || status < 400 || status >= 500 || typeof frame.message !== "string")
        ws.failures.push(`${name}: ${short(frame)}`);
      else if (frames.length > from + 1) ws.failures.push(`${name}: more than one answer`);
      if (VERBOSE) console.log(`ws ${short(frame)} ← ${name}`);
    }
    report("WebSocket", ws);
    expect(ws.failures).toEqual([]);
    expect(ws.c5xx).toBe(0);

    // the same connection still works for a valid request
    const from = frames.length;
    socket.send(JSON.stringify({ type: "submit", requestId: "valid", job: { prompt: "still alive", width: 64, height: 64, steps: 1 } }));
    const deadline = Date.now() + 10_000;
    while (!frames.slice(from).some((f) => f.requestId === "valid") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(frames.slice(from).find((f) => f.requestId === "valid")).toMatchObject({ type: "accepted", requestId: "valid" });
    socket.close();
  });
});

describe("afterwards", () => {
  it("the server is alive and a valid request works; totals", async () => {
    const all = [rest, legacy, ws];
    const sum = (k: "cases" | "c4xx" | "c5xx" | "other") => all.reduce((n, t) => n + t[k], 0);
    console.log(
      `[bad-input] total: ${JSON.stringify({ cases: sum("cases"), "4xx": sum("c4xx"), "5xx": sum("c5xx"), other: sum("other") })}`,
    );
    expect(sum("cases")).toBeGreaterThanOrEqual(200);
    expect(sum("c5xx")).toBe(0);

    expect((await request(stack.url).get("/health")).status).toBe(200);
    const res = await request(stack.url).post("/jobs").send({ prompt: "a valid one", width: 64, height: 64, steps: 1 });
    expect(res.status).toBe(202);
    expect((await request(stack.url).get(`/jobs/${res.body.id}`)).body.status).toBe("queued");
    // only the two valid submissions reached the queue
    expect(await stack.service.queue.queue.count()).toBe(2);
  });
});
