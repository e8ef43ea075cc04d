import { WatchedWorker, WorkerWatchdog } from "./worker-watchdog";

function fakeWorker(over: Partial<{ connected: boolean; running: boolean; active: number; ready: number }> = {}) {
  const state = { connected: true, running: true, active: 0, ready: 0, ...over };
  const reasons: string[] = [];
  const worker: WatchedWorker = {
    connected: () => state.connected,
    running: () => state.running,
    activeJobs: () => state.active,
    readyJobs: async () => state.ready,
    recreate: async (reason) => {
      reasons.push(reason);
    },
  };
  return { state, worker, reasons };
}

describe("WorkerWatchdog", () => {
  it("leaves a healthy worker alone: idle with nothing waiting, or busy while jobs wait", async () => {
    const { state, worker, reasons } = fakeWorker();
    const dog = new WorkerWatchdog(worker, 1_000);
    for (let t = 0; t <= 5_000; t += 250) await dog.tick(t);
    state.active = 1;
    state.ready = 10;
    for (let t = 5_000; t <= 10_000; t += 250) await dog.tick(t);
    expect(reasons).toEqual([]);
  });

  it("recreates a worker idle while jobs wait once that lasted the bound, and only then", async () => {
    const { worker, reasons } = fakeWorker({ ready: 3 });
    const dog = new WorkerWatchdog(worker, 1_000);
    await dog.tick(0);
    await dog.tick(900);
    expect(reasons).toEqual([]);
    await dog.tick(1_000);
    expect(reasons).toEqual(["worker idle while jobs wait"]);
    expect(dog.recreations).toBe(1);
  });

  it("recreates a worker whose main loop stopped", async () => {
    const { worker, reasons } = fakeWorker({ running: false });
    const dog = new WorkerWatchdog(worker, 500);
    await dog.tick(0);
    await dog.tick(600);
    expect(reasons).toEqual(["worker is not running"]);
  });

  it("judges nothing while Redis is away, and starts counting again from reconnection", async () => {
    const { state, worker, reasons } = fakeWorker({ connected: false, running: false, ready: 5 });
    const dog = new WorkerWatchdog(worker, 1_000);
    for (let t = 0; t <= 3_000; t += 250) await dog.tick(t);
    expect(reasons).toEqual([]);
    state.connected = true;
    await dog.tick(3_250);
    await dog.tick(4_000);
    expect(reasons).toEqual([]);
    await dog.tick(4_250);
    expect(reasons).toHaveLength(1);
  });

  it("a job picked up in between clears the suspicion; errors are reported, not thrown", async () => {
    const { state, worker, reasons } = fakeWorker({ ready: 1 });
    const errors: string[] = [];
    const dog = new WorkerWatchdog(
      { ...worker, readyJobs: async () => (state.ready < 0 ? Promise.reject(new Error("redis flaked")) : state.ready) },
      1_000,
      (e) => errors.push(e.message),
    );
    await dog.tick(0);
    state.active = 1;
    await dog.tick(600);
    state.active = 0;
    await dog.tick(1_200);
    expect(reasons).toEqual([]);
    state.ready = -1;
    await dog.tick(1_500);
    expect(errors).toEqual(["redis flaked"]);
  });

  it("is not fooled by ticks that land between jobs, or by a pause of the whole process, while jobs are being taken", async () => {
    const { worker, reasons } = fakeWorker({ ready: 2 });
    let taken = 0;
    const dog = new WorkerWatchdog({ ...worker, jobsTaken: () => taken }, 1_000);
    // every tick sees "idle while jobs wait", but a job was taken in between each time
    for (let t = 0; t <= 3_000; t += 250) {
      await dog.tick(t);
      taken++;
    }
    expect(reasons).toEqual([]);
    // suspicion seen just before a 5 s pause; after it the worker takes the waiting job at once
    await dog.tick(3_250);
    taken++;
    await dog.tick(8_250);
    expect(reasons).toEqual([]);
    // nothing taken for the whole bound: stuck after all
    await dog.tick(9_250);
    expect(reasons).toEqual(["worker idle while jobs wait"]);
  });
});
