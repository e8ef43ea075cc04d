import { createLogger } from "../infra/logger";
import type { JobEventHandlers, LiveProgress } from "../jobs/job-events-channel";
import type { JobStatus, JobView } from "../jobs/jobs.dto";
import { JobEventsHub } from "./job-events";

/** The channel and the database as the hub sees them: messages are pushed by hand, rows change by hand. */
function world(opts: { safetyPollMs?: number } = {}) {
  let handlers: JobEventHandlers | undefined;
  const rows = new Map<string, JobStatus>();
  let reads = 0;
  let readGate: Promise<void> | undefined;
  const jobs = {
    get: async (id: string): Promise<JobView> => {
      reads++;
      const status = rows.get(id) ?? "queued"; // read before waiting: a slow read returns what it saw
      await readGate;
      return { id, status } as JobView;
    },
  };
  const channel = {
    subscribe: async (h: JobEventHandlers) => {
      handlers = h;
      return async () => undefined;
    },
  };
  const hub = new JobEventsHub(channel, jobs, createLogger("silent"), opts);
  return {
    hub,
    rows,
    reads: () => reads,
    send: (m: Parameters<JobEventHandlers["message"]>[0]) => handlers!.message(m),
    resubscribed: () => handlers!.resubscribed(),
    holdReads: () => {
      let release!: () => void;
      readGate = new Promise((r) => (release = r));
      return () => {
        readGate = undefined;
        release();
      };
    },
  };
}

const tick = () => new Promise((r) => setTimeout(r, 10));

describe("JobEventsHub", () => {
  let w: ReturnType<typeof world>;
  afterEach(async () => w?.hub.close());

  it("relays steps to the job's watchers only, then the final state read from the database on a final message", async () => {
    w = world();
    await w.hub.start();
    const steps: LiveProgress[] = [];
    const finals: JobView[] = [];
    w.rows.set("a", "active");
    w.hub.watch("a", { progress: (p) => steps.push(p), final: (v) => finals.push(v) });
    await tick();
    w.send({ jobId: "b", progress: { step: 1, totalSteps: 2 } });
    w.send({ jobId: "a", progress: { step: 1, totalSteps: 2, preview: { width: 8, height: 8, pngBase64: "AA==" } } });
    w.send({ jobId: "a", progress: { step: 2, totalSteps: 2 } });
    w.send({ jobId: "a", final: "completed" }); // not yet true in the database: the hub must not trust the message
    await tick();
    expect(finals).toHaveLength(0);
    w.rows.set("a", "failed");
    w.send({ jobId: "a", final: "failed" });
    await tick();
    expect(steps.map((p) => p.step)).toEqual([1, 2]);
    expect(steps[0].preview).toEqual({ width: 8, height: 8, pngBase64: "AA==" });
    expect(finals.map((v) => v.status)).toEqual(["failed"]);
    expect(w.hub.watchedJobs()).toBe(0);
  });

  it("answers a job that is already final at once", async () => {
    w = world();
    await w.hub.start();
    w.rows.set("done", "cancelled");
    await expect(w.hub.waitForFinal("done")).resolves.toMatchObject({ status: "cancelled" });
  });

  it("does not lose a final message that arrives while an earlier read (which saw it running) is in flight", async () => {
    w = world();
    await w.hub.start();
    w.rows.set("a", "active");
    const release = w.holdReads();
    const final = w.hub.waitForFinal("a"); // its first read sees "active" and is held
    await tick();
    w.rows.set("a", "completed");
    w.send({ jobId: "a", final: "completed" });
    release();
    await expect(final).resolves.toMatchObject({ status: "completed" });
  });

  it("re-reads every watched job when the subscription comes back after an outage", async () => {
    w = world({ safetyPollMs: 60_000 });
    await w.hub.start();
    w.rows.set("a", "active");
    const final = w.hub.waitForFinal("a");
    await tick();
    w.rows.set("a", "completed"); // announced while the subscription was down: the message never came
    w.resubscribed();
    await expect(final).resolves.toMatchObject({ status: "completed" });
  });

  it("still delivers a final state whose message was lost (its publisher died after the write), by the safety poll", async () => {
    w = world({ safetyPollMs: 50 });
    await w.hub.start();
    w.rows.set("a", "active");
    const final = w.hub.waitForFinal("a");
    await tick();
    const before = w.reads();
    w.rows.set("a", "completed");
    await expect(final).resolves.toMatchObject({ status: "completed" });
    expect(w.reads()).toBeGreaterThan(before);
  });

  it("stops waiting when the signal fires, leaving no watcher behind", async () => {
    w = world();
    await w.hub.start();
    w.rows.set("a", "active");
    const control = new AbortController();
    const waiting = w.hub.waitForFinal("a", control.signal);
    control.abort();
    await expect(waiting).rejects.toMatchObject({ name: "AbortError" });
    expect(w.hub.watchedJobs()).toBe(0);
  });
});
