import type IORedis from "ioredis";
import { AppError } from "../backends/error-codes";
import type { EngineName } from "../backends/engine-names";
import type { EngineProbe } from "../backends/engine-status";
import { SettingsService } from "./settings.service";

/** A Map behind the two Redis calls the settings make; `down` makes every call fail like a lost connection. */
function fakeRedis() {
  const data = new Map<string, string>();
  const state = { down: false };
  const redis = {
    get: async (key: string) => {
      if (state.down) throw new Error("connection lost");
      return data.get(key) ?? null;
    },
    set: async (key: string, value: string) => {
      if (state.down) throw new Error("connection lost");
      data.set(key, value);
      return "OK";
    },
  };
  return { redis: redis as unknown as IORedis, data, state };
}

const probes: Record<EngineName, EngineProbe | null> = {
  torch: { engine: "torch", available: true, device: "cpu" },
  mlx: { engine: "mlx", available: false, reason: "mlx is not installed" },
};

const registry: Record<string, { name: string; kind: string; mlx: boolean }> = {
  "tiny-sd": { name: "tiny-sd", kind: "base", mlx: true },
  "tiny-sdxl": { name: "tiny-sdxl", kind: "base", mlx: false },
  "pixel-lora": { name: "pixel-lora", kind: "lora", mlx: false },
};

/** The registry's two answers the settings rely on, with its real error codes. */
const models = {
  find: async (name: string) => {
    const m = registry[name];
    if (!m) throw new AppError("MODEL_NOT_FOUND", `no model named ${name}`);
    return { ...m, id: 1 } as never;
  },
  resolve: async (name: string, engine: EngineName) => {
    const m = registry[name];
    if (!m || m.kind !== "base") throw new AppError("MODEL_NOT_FOUND", `no base model named ${name}`);
    if (engine === "mlx" && !m.mlx) throw new AppError("MODEL_NOT_CONVERTED", `model ${name} has no MLX conversion`);
    return { name, architecture: "sd" as const, source: `/models/${name}`, commit: null };
  },
};

function settings() {
  const fake = fakeRedis();
  const service = new SettingsService(fake.redis, "t", { engine: "torch", model: "tiny-sd" }, { read: async (e) => probes[e] }, models);
  return { service, ...fake };
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    return (err as AppError).code;
  }
  return "resolved";
}

describe("SettingsService", () => {
  afterEach(() => {
    probes.mlx = { engine: "mlx", available: false, reason: "mlx is not installed" };
  });

  it("answers the configured fallbacks until an admin sets a default, and when Redis is down", async () => {
    const { service, state } = settings();
    expect([await service.defaultEngine(), await service.defaultModel()]).toEqual(["torch", "tiny-sd"]);
    await service.setDefaultModel("tiny-sdxl");
    expect(await service.defaultModel()).toBe("tiny-sdxl");
    state.down = true;
    expect([await service.defaultEngine(), await service.defaultModel()]).toEqual(["torch", "tiny-sd"]);
  });

  it("refuses an unknown engine, one no worker runs, and one that cannot run the default model; keeps the old default", async () => {
    const { service, data } = settings();
    for (const bad of ["TORCH", "cuda", 5, null, undefined]) expect(await codeOf(service.setDefaultEngine(bad))).toBe("INVALID_REQUEST");
    expect(await codeOf(service.setDefaultEngine("mlx"))).toBe("ENGINE_UNAVAILABLE");
    probes.mlx = { engine: "mlx", available: true, device: "gpu" };
    await service.setDefaultModel("tiny-sdxl");
    expect(await codeOf(service.setDefaultEngine("mlx"))).toBe("MODEL_NOT_CONVERTED");
    expect(data.has("t:default-engine")).toBe(false);
    expect(await service.defaultEngine()).toBe("torch");
  });

  it("sets an engine that runs the default model, and answers its probe", async () => {
    const { service } = settings();
    probes.mlx = { engine: "mlx", available: true, device: "gpu" };
    const { engine, probe } = await service.setDefaultEngine("mlx");
    expect([engine, probe.device, await service.defaultEngine()]).toEqual(["mlx", "gpu", "mlx"]);
  });

  it("refuses an unknown model, a LoRA, and a model the default engine cannot run; keeps the old default", async () => {
    const { service } = settings();
    probes.mlx = { engine: "mlx", available: true };
    await service.setDefaultEngine("mlx");
    expect(await codeOf(service.setDefaultModel("no-such-model"))).toBe("MODEL_NOT_FOUND");
    expect(await codeOf(service.setDefaultModel("pixel-lora"))).toBe("MODEL_NOT_FOUND");
    expect(await codeOf(service.setDefaultModel("tiny-sdxl"))).toBe("MODEL_NOT_CONVERTED");
    for (const bad of ["", 7, null]) expect(await codeOf(service.setDefaultModel(bad))).toBe("INVALID_REQUEST");
    expect(await service.defaultModel()).toBe("tiny-sd");
    expect(await service.setDefaultModel("tiny-sd")).toEqual({ model: "tiny-sd" });
  });
});
