import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import request from "supertest";
import { freePort, startManagedRedis, ManagedRedis } from "../../src/infra/managed-redis";
import { startTestPostgres, TestPostgres } from "../support/postgres";
import { CliProcess, ensureBuilt } from "../support/processes";
import { waitFor, decodePng } from "../support/stack";

/**
 * Many machines in miniature: one `node dist/cli.js api` and two `node dist/cli.js worker` processes that share nothing
 * but a Redis (REDIS_URL) and a PostgreSQL database (DATABASE_URL), as docker-compose.yml runs them. Jobs submitted
 * over HTTP to the API are run by both workers; each job records which one (GET /jobs/{id} `worker`).
 * Uses dist/: built by `make test` (scripts/setup.sh); ensureBuilt() rebuilds it here if src/ is newer.
 */
const JOBS = 12;

let tmp: string;
let redis: ManagedRedis;
let pg: TestPostgres;
let api: CliProcess;
let workers: CliProcess[] = [];
let url: string;

beforeAll(async () => {
  ensureBuilt();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-multi-"));
  [redis, pg] = await Promise.all([startManagedRedis({ dataDir: path.join(tmp, "redis"), durable: false }), startTestPostgres()]);
  const port = await freePort();
  const shared = {
    REDIS_URL: redis.url,
    DATABASE_URL: pg.url,
    PIXELAI_QUEUE_PREFIX: "multi",
    LOG_LEVEL: "info",
    PIXELAI_RUNNER_TIMEOUT_MS: "120000",
  };
  // Each process gets its own data dir, as separate machines would: nothing may travel through the file system.
  const dataDir = (name: string) => {
    const dir = path.join(tmp, name);
    fs.mkdirSync(dir, { recursive: true });
    return dir;
  };
  // Torch only: one Python runner per worker keeps two workers within this machine's memory.
  workers = ["worker-a", "worker-b"].map(
    (name) =>
      new CliProcess(
        ["worker"],
        { ...shared, PIXELAI_DATA_DIR: dataDir(name), PIXELAI_ENGINES: "torch", PIXELAI_WORKER_CONCURRENCY: "1" },
        path.join(tmp, `${name}.log`),
      ),
  );
  api = new CliProcess(
    ["api"],
    { ...shared, PIXELAI_DATA_DIR: dataDir("api"), HOST: "127.0.0.1", PORT: String(port) },
    path.join(tmp, "api.log"),
  );
  url = `http://127.0.0.1:${port}`;
  await Promise.all([api.waitForLog("API listening"), ...workers.map((w) => w.waitForLog("generation worker started"))]);
});

afterAll(async () => {
  await Promise.all([api, ...workers].filter(Boolean).map((p) => p.stop()));
  await redis?.stop();
  await pg?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe("one API and two workers on one Redis and one PostgreSQL", () => {
  it(`runs ${JOBS} jobs submitted over HTTP on both workers`, async () => {
    const ids: string[] = [];
    for (let i = 0; i < JOBS; i++) {
      const res = await request(url)
        .post("/jobs")
        .send({ prompt: `sprite ${i}`, width: 64, height: 64, steps: 4, seed: i, pixel: { width: 32, height: 32, colors: 8 } });
      expect(res.status).toBe(202);
      ids.push(res.body.id);
    }
    const jobs = await Promise.all(
      ids.map((id) =>
        waitFor(
          async () => {
            const res = await request(url).get(`/jobs/${id}`);
            return ["completed", "failed", "cancelled"].includes(res.body.status) ? res.body : undefined;
          },
          300_000,
          250,
        ),
      ),
    );
    expect(jobs.map((j) => j.status)).toEqual(Array(JOBS).fill("completed"));

    const perWorker = new Map<string, number>();
    for (const j of jobs) perWorker.set(j.worker, (perWorker.get(j.worker) ?? 0) + 1);
    const expected = workers.map((w) => `${os.hostname()}:${w.pid}`).sort();
    expect([...perWorker.keys()].sort()).toEqual(expected);
    // Both really shared the load: neither sat idle while the other ran the queue (1 each would be a fluke).
    for (const n of perWorker.values()) expect(n).toBeGreaterThanOrEqual(2);

    // The API process, which runs no generation itself, serves every image from the shared database.
    const res = await request(url)
      .get(`/jobs/${ids[0]}/image`)
      .buffer(true)
      .parse((r, cb) => {
        const chunks: Buffer[] = [];
        r.on("data", (c: Buffer) => chunks.push(c));
        r.on("end", () => cb(null, Buffer.concat(chunks)));
      });
    expect(res.status).toBe(200);
    const png = decodePng(res.body as Buffer);
    expect([png.width, png.height]).toEqual([32, 32]);

    const history = await request(url).get("/jobs").query({ limit: 100 });
    expect(history.body.items.map((j: { id: string }) => j.id)).toEqual([...ids].reverse());
    console.log(`multi-process: ${JOBS} jobs, per worker ${JSON.stringify(Object.fromEntries(perWorker))}`);
  });
});
