import { createLogger } from "../infra/logger";
import { encodeFailure } from "../backends/error-codes";
import { JobReconciler, reconcileJobs, ReconcileDeps } from "./job-reconciler";

type Row = { id: string; status: string; startedAt: Date | null; createdAt: Date; request: string };

function world(rows: Row[], states: Record<string, { state: string; failedReason?: string }>) {
  const db = new Map(rows.map((r) => [r.id, { ...r, errorCode: null as string | null }]));
  const added: string[] = [];
  const deps: ReconcileDeps = {
    rows: async (status) => [...db.values()].filter((r) => r.status === status),
    requeueIfUnchanged: async (id, seen, code) => {
      const r = db.get(id)!;
      if (r.status !== seen.status || r.startedAt !== seen.startedAt) return false;
      Object.assign(r, { status: "queued", errorCode: code });
      return true;
    },
    finish: async (id, status, code) => {
      const r = db.get(id)!;
      if (!["queued", "active"].includes(r.status)) return false;
      Object.assign(r, { status, errorCode: code });
      return true;
    },
    state: async (id) => states[id] ?? { state: "missing" },
    add: async (p) => {
      added.push(p.jobId);
    },
    logger: createLogger("silent"),
  };
  return { db, added, deps };
}

const t = new Date(0);
const req = JSON.stringify({ prompt: "x", engine: "torch" });
const row = (id: string, status: string): Row => ({ id, status, startedAt: status === "active" ? t : null, createdAt: t, request: req });

describe("reconcileJobs", () => {
  it("makes every unfinished row agree with the queue", async () => {
    const { db, added, deps } = world(
      [
        row("a", "active"),
        row("b", "active"),
        row("c", "active"),
        row("d", "active"),
        row("e", "queued"),
        row("f", "queued"),
        row("g", "queued"),
      ],
      {
        a: { state: "active" }, // a live worker holds it
        b: { state: "waiting" }, // its worker died; the stalled checker handed it back
        c: { state: "failed", failedReason: "job stalled more than allowable limit" },
        // d: missing — Redis lost it
        e: { state: "prioritized" },
        f: { state: "failed", failedReason: encodeFailure("TIMEOUT", "the job ran past its time budget") },
      },
    );
    const report = await reconcileJobs(deps, { minAgeMs: 0 });
    expect(report).toEqual({ requeued: 1, readded: 2, failed: 2 });
    expect(Object.fromEntries([...db].map(([id, r]) => [id, `${r.status}${r.errorCode ? `:${r.errorCode}` : ""}`]))).toEqual({
      a: "active",
      b: "queued:ENGINE_INTERNAL",
      c: "failed:ENGINE_INTERNAL",
      d: "queued:ENGINE_INTERNAL",
      e: "queued",
      f: "failed:TIMEOUT",
      g: "queued",
    });
    expect(added.sort()).toEqual(["d", "g"]);
  });

  it("does not overwrite an attempt a worker started after the row was read", async () => {
    const { db, deps } = world([row("a", "active")], { a: { state: "waiting" } });
    const realRows = deps.rows;
    deps.rows = async (...args) => {
      const seen = (await realRows(...args)).map((r) => ({ ...r }));
      db.get("a")!.startedAt = new Date(1); // picked up again between the read and the write
      return seen;
    };
    expect(await reconcileJobs(deps, { minAgeMs: 0 })).toEqual({ requeued: 0, readded: 0, failed: 0 });
    expect(db.get("a")!.status).toBe("active");
  });

  it("keeps the code and message a worker encoded in BullMQ's failure reason", async () => {
    const { db, deps } = world([row("a", "active")], { a: { state: "failed", failedReason: encodeFailure("CUDA_OOM", "out of: memory") } });
    await reconcileJobs(deps, { minAgeMs: 0 });
    expect(db.get("a")).toMatchObject({ status: "failed", errorCode: "CUDA_OOM" });
  });

  it("reconciles one stalled job on demand, and leaves final rows alone", async () => {
    const { db, deps } = world([row("a", "active"), row("b", "completed")], { a: { state: "waiting" }, b: { state: "waiting" } });
    const reconciler = new JobReconciler({ ...deps, find: async (id) => db.get(id) ?? null });
    await reconciler.runOne("a");
    await reconciler.runOne("b");
    await reconciler.runOne("missing");
    expect(db.get("a")!.status).toBe("queued");
    expect(db.get("b")!.status).toBe("completed");
  });
});
