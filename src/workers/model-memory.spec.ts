import pino from "pino";
import type { EngineName } from "../backends/engine-names";
import { ModelMemory } from "./model-memory";

const MB = 1024 * 1024;
const SIZES: Record<string, number> = { a: 4 * MB, b: 5 * MB, c: 3 * MB, huge: 20 * MB };

function setUp(budgetMb: number, { idleMs = 0, cacheSize = 2 } = {}) {
  let clock = 0;
  const unloaded: string[] = [];
  const runner = (engine: EngineName) => ({
    unload: async (source: string) => {
      unloaded.push(`${engine}:${source}`);
    },
  });
  const memory = new ModelMemory({
    budgetBytes: budgetMb * MB,
    idleMs,
    cacheSize,
    sizeOf: (_engine, source) => SIZES[source],
    runners: new Map([
      ["torch", runner("torch")],
      ["mlx", runner("mlx")],
    ]),
    logger: pino({ level: "silent" }),
    now: () => clock,
  });
  return { memory, unloaded, tick: (ms: number) => (clock += ms) };
}

describe("ModelMemory", () => {
  it("unloads the least recently used idle model, on whichever runner holds it, before a load that would not fit", async () => {
    const { memory, unloaded, tick } = setUp(10);
    (await memory.acquire("torch", "a"))();
    tick(1);
    (await memory.acquire("mlx", "b"))();
    tick(1);
    expect(unloaded).toEqual([]);
    (await memory.acquire("mlx", "c"))(); // 4 + 5 + 3 > 10: torch's "a" is the oldest
    expect(unloaded).toEqual(["torch:a"]);
    expect(memory.resident().map((r) => `${r.engine}:${r.source}`)).toEqual(["mlx:b", "mlx:c"]);
  });

  it("a model already resident costs nothing", async () => {
    const { memory, unloaded } = setUp(5);
    (await memory.acquire("torch", "a"))();
    (await memory.acquire("torch", "a"))();
    expect(unloaded).toEqual([]);
    expect(memory.resident()).toHaveLength(1);
  });

  it("waits while every resident model is in use, and loads once one is released", async () => {
    const { memory, unloaded } = setUp(8);
    const releaseA = await memory.acquire("torch", "a");
    let loaded = false;
    const second = memory.acquire("mlx", "b").then((release) => {
      loaded = true;
      return release;
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(loaded).toBe(false);
    expect(unloaded).toEqual([]);
    releaseA();
    (await second)();
    expect(loaded).toBe(true);
    expect(unloaded).toEqual(["torch:a"]);
  });

  it("refuses at once a model larger than the whole budget", async () => {
    const { memory } = setUp(10);
    await expect(memory.acquire("torch", "huge")).rejects.toMatchObject({ code: "INSUFFICIENT_MEMORY", status: 507 });
  });

  it("without a budget never unloads for room; follows the runner's own LRU past its cache size", async () => {
    const { memory, unloaded, tick } = setUp(0, { cacheSize: 2 });
    for (const source of ["a", "b", "c"]) {
      (await memory.acquire("torch", source))();
      tick(1);
    }
    expect(unloaded).toEqual([]); // the runner evicted "a" itself; the ledger only forgets it
    expect(memory.resident().map((r) => r.source)).toEqual(["b", "c"]);
  });

  it("unloads models idle past the idle time, never one in use", async () => {
    const { memory, unloaded, tick } = setUp(0, { idleMs: 60_000 });
    (await memory.acquire("torch", "a"))();
    const holdB = await memory.acquire("mlx", "b");
    tick(61_000);
    await memory.sweepIdle();
    expect(unloaded).toEqual(["torch:a"]);
    holdB();
    tick(30_000);
    await memory.sweepIdle();
    expect(unloaded).toEqual(["torch:a"]);
    tick(31_000);
    await memory.sweepIdle();
    expect(unloaded).toEqual(["torch:a", "mlx:b"]);
  });
});
