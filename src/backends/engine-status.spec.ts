import type { EngineProbe } from "./engine-status";
import { PROBE_MAX_AGE_MS, RecentProbes } from "./engine-status";

describe("RecentProbes", () => {
  const probe = (schedulers: string[]): EngineProbe => ({ engine: "torch", available: true, schedulers });

  function setUp(answers: Array<EngineProbe | null | Error>) {
    let clock = 0;
    const reads: string[] = [];
    const store = {
      read: async (engine: "torch" | "mlx") => {
        reads.push(engine);
        const next = answers.shift();
        if (next instanceof Error) throw next;
        return next ?? null;
      },
    };
    const probes = new RecentProbes(store, PROBE_MAX_AGE_MS, () => clock);
    return { probes, reads, advance: (ms: number) => (clock += ms) };
  }

  it("answers from the probe it read for PROBE_MAX_AGE_MS, then reads again", async () => {
    const { probes, reads, advance } = setUp([probe(["euler"]), probe(["euler", "ddim"])]);
    expect((await probes.read("torch"))?.schedulers).toEqual(["euler"]);
    advance(PROBE_MAX_AGE_MS - 1);
    expect((await probes.read("torch"))?.schedulers).toEqual(["euler"]);
    expect(reads).toHaveLength(1);
    advance(1);
    expect((await probes.read("torch"))?.schedulers).toEqual(["euler", "ddim"]);
    expect(reads).toHaveLength(2);
  });

  it("keeps each engine apart, an absent probe included, and never keeps a failed read", async () => {
    const { probes, reads } = setUp([null, new Error("redis away"), probe(["euler"])]);
    expect(await probes.read("mlx")).toBeNull();
    expect(await probes.read("mlx")).toBeNull();
    await expect(probes.read("torch")).rejects.toThrow("redis away");
    expect((await probes.read("torch"))?.schedulers).toEqual(["euler"]);
    expect(reads).toEqual(["mlx", "torch", "torch"]);
  });
});
