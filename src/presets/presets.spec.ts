import { AppError } from "../backends/error-codes";
import { applyPreset, findPreset, PRESETS } from "./presets";

/** The old Aseprite extension's default negative prompt, as its settings start. */
const OLD_CLIENT_NEGATIVE = "blurry, smooth, antialiased, realistic, photographic, 3d render, low quality";

describe("presets", () => {
  it("ships pixel-art-xl: SDXL base 1.0 + nerijs/pixel-art-xl at 0.8, 1024×1024, 15 steps", () => {
    expect(findPreset("pixel-art-xl")).toMatchObject({
      model: "stabilityai/stable-diffusion-xl-base-1.0",
      lora: { name: "nerijs/pixel-art-xl", strength: 0.8, architecture: "sdxl" },
      width: 1024,
      height: 1024,
      steps: 15,
      negativePrompt: OLD_CLIENT_NEGATIVE,
    });
    expect(new Set(PRESETS.map((p) => p.name)).size).toBe(PRESETS.length);
  });

  it("fills what a request leaves out and drops the preset field", () => {
    expect(applyPreset({ prompt: "a knight", preset: "pixel-art-xl" })).toEqual({
      prompt: "a knight",
      model: "stabilityai/stable-diffusion-xl-base-1.0",
      lora: { name: "nerijs/pixel-art-xl", strength: 0.8 },
      steps: 15,
      width: 1024,
      height: 1024,
      negativePrompt: OLD_CLIENT_NEGATIVE,
    });
  });

  it("lets every field the request gives win (lora as a whole), and keeps fields the preset does not know", () => {
    const out = applyPreset({
      prompt: "a knight",
      preset: "pixel-art-xl",
      model: "tiny-sdxl",
      lora: { name: "tiny-sdxl-lora" },
      steps: 2,
      width: 64,
      negativePrompt: "",
      seed: 3,
      pixel: { width: 16, height: 16 },
    });
    expect(out).toEqual({
      prompt: "a knight",
      model: "tiny-sdxl",
      lora: { name: "tiny-sdxl-lora" },
      steps: 2,
      width: 64,
      height: 1024,
      negativePrompt: "",
      seed: 3,
      pixel: { width: 16, height: 16 },
    });
  });

  it("leaves a request without a preset untouched", () => {
    const req = { prompt: "x", steps: 3 };
    expect(applyPreset(req)).toBe(req);
  });

  it("refuses an unknown preset with INVALID_REQUEST naming the field and the known ones", () => {
    let err: unknown;
    try {
      applyPreset({ prompt: "x", preset: "pixel-art-xxl" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AppError);
    expect(err).toMatchObject({ code: "INVALID_REQUEST", status: 400, details: { field: "preset" } });
    expect((err as Error).message).toMatch(/pixel-art-xl/);
  });
});
