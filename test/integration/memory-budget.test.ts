import fs from "node:fs";
import request from "supertest";
import { startTestStack, TestStack, waitFor } from "../support/stack";
import { finishedJob, submitJob } from "../support/jobs-client";
import { privateModelStore } from "../support/model-store";

/**
 * Both engines warm in one worker under a memory budget that holds one tiny model but not two (tiny-sd is about
 * 10 MB at fp32, tiny-sdxl about 13 MB): the MLX load unloads the torch runner's model first instead of running past
 * the budget, a model larger than the budget fails INSUFFICIENT_MEMORY, and an idle model is unloaded after a while.
 */
let stack: TestStack;
let fixtures: string;
let modelsDir: string;

beforeAll(async () => {
  ({ root: fixtures, modelsDir } = privateModelStore("pixelai-memory-"));
  stack = await startTestStack({
    PIXELAI_MODELS_DIR: modelsDir,
    PIXELAI_LORAS_DIR: `${fixtures}/loras`,
    PIXELAI_MEMORY_BUDGET_MB: "11",
    PIXELAI_IDLE_UNLOAD_S: "20",
  });
  const conversion = await request(stack.url).post("/models/tiny-sd/conversions").send({ dtype: "float32" });
  await waitFor(async () =>
    (await request(stack.url).get(`/conversions/${conversion.body.id}`)).body.status === "completed" ? true : undefined,
  );
});

afterAll(async () => {
  await stack?.close();
  fs.rmSync(fixtures, { recursive: true, force: true });
});

const job = { prompt: "a knight", width: 64, height: 64, steps: 2, seed: 3 };
const loaded = async (engine: "torch" | "mlx") => ((await stack.service.runners.get(engine)!.probe()).loadedModels ?? []) as string[];

describe("memory budget across both warm runners", () => {
  it("unloads the torch runner's model before the MLX runner loads past the budget", async () => {
    expect(await finishedJob(stack.url, await submitJob(stack.url, { ...job, engine: "torch" }))).toMatchObject({ status: "completed" });
    expect(await loaded("torch")).toHaveLength(1);
    expect(await finishedJob(stack.url, await submitJob(stack.url, { ...job, engine: "mlx" }))).toMatchObject({ status: "completed" });
    expect(await loaded("torch")).toEqual([]);
    expect(await loaded("mlx")).toHaveLength(1);
  });

  it("fails a model larger than the whole budget with INSUFFICIENT_MEMORY, loading nothing", async () => {
    const done = await finishedJob(stack.url, await submitJob(stack.url, { ...job, model: "tiny-sdxl", engine: "torch" }));
    expect(done).toMatchObject({ status: "failed", error: { code: "INSUFFICIENT_MEMORY" } });
    expect(done.error.message).toMatch(/PIXELAI_MEMORY_BUDGET_MB/);
    expect(await loaded("torch")).toEqual([]);
  });

  it("unloads a model no job used for PIXELAI_IDLE_UNLOAD_S", async () => {
    await waitFor(async () => ((await loaded("mlx")).length === 0 ? true : undefined), 90_000, 1_000);
    expect(await loaded("torch")).toEqual([]);
  });
});
