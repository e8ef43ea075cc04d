import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { schedSample, SchedTally } from "./sched-stats";

/** A /proc look-alike: schedstat is "<run ns> <wait ns> <timeslices>", status has one line per field (proc(5)). */
function fakeProc(root: string, pid: number, threads: Record<string, [number, number, number]>): void {
  for (const [tid, [run, wait, switches]] of Object.entries(threads)) {
    const dir = path.join(root, String(pid), "task", tid);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, "schedstat"), `${run} ${wait} 7\n`);
    fs.writeFileSync(path.join(dir, "status"), `Name:\tpython\nvoluntary_ctxt_switches:\t99\nnonvoluntary_ctxt_switches:\t${switches}\n`);
  }
}

describe("scheduling figures from /proc", () => {
  let root: string;
  beforeEach(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-sched-"))));
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it("sums every thread of a process, in milliseconds", () => {
    fakeProc(root, 42, { "42": [3_000_000, 500_000, 2], "43": [1_500_000, 250_000, 1] });
    expect(schedSample(42, root)).toEqual({ cpuMs: 4.5, runqueueWaitMs: 0.75, involuntarySwitches: 3 });
  });

  it("has nothing to say of a process that is not there", () => {
    expect(schedSample(7, root)).toBeNull();
    expect(schedSample(undefined, root)).toBeNull();
  });

  it("reports per job over the blocks, leaving out a block whose process changed", async () => {
    fakeProc(root, 42, { "42": [10_000_000, 1_000_000, 0] });
    const tally = new SchedTally();
    await tally.measure(() => 42, 10, async () => fakeProc(root, 42, { "42": [110_000_000, 6_000_000, 20] }), root);
    let pid = 42;
    fakeProc(root, 43, { "43": [0, 0, 0] });
    await tally.measure(() => pid, 10, async () => void (pid = 43), root); // the runner restarted mid-block
    expect(tally.summary()).toEqual({ jobs: 10, cpuMsPerJob: 10, runqueueWaitMsPerJob: 0.5, involuntarySwitchesPerJob: 2 });
  });

  it("has no summary before a block was measured", () => {
    expect(new SchedTally().summary()).toBeUndefined();
  });

  it("sees this process's own CPU time grow while it works (Linux; elsewhere there is no schedstat)", () => {
    const before = schedSample(process.pid);
    const until = performance.now() + 30;
    while (performance.now() < until) Math.sqrt(Math.random());
    const after = schedSample(process.pid);
    if (process.platform !== "linux") return expect(after).toBeNull();
    expect(after!.cpuMs - before!.cpuMs).toBeGreaterThan(15);
  });
});
