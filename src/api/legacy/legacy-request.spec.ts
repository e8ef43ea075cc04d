import { AppError } from "../../backends/error-codes";
import { legacyLoraName, toLegacyJob } from "./legacy-request";

describe("legacyLoraName", () => {
  it.each([
    ["None", null],
    ["none", null],
    ["", null],
    ["loras/pixel-art.safetensors", "pixel-art"],
    ["loras\\pixel-art.safetensors", "pixel-art"],
    ["./loras/pixel-art.safetensors", "pixel-art"],
    ["pixel-art.safetensors", "pixel-art"],
    ["nerijs/pixel-art-xl", "nerijs/pixel-art-xl"],
    ["tiny-sd-lora", "tiny-sd-lora"],
  ])("%j → %j", (input, expected) => {
    expect(legacyLoraName(input)).toBe(expected);
  });
});

describe("toLegacyJob", () => {
  const base = { prompt: "a knight", width: 64, height: 64, steps: 4 };

  it("maps the old client's body onto a v1 job and ignores fields it never knew", () => {
    const { job, fitMode, preserveAspect } = toLegacyJob({
      ...base,
      negative_prompt: "blurry",
      guidance_scale: 7.5,
      lora_model: "loras/pixel.safetensors",
      lora_strength: 0.8,
      remove_background: true,
      pixel_width: 32,
      pixel_height: 32,
      colors: 8,
      preserve_aspect: true,
      some_future_field: { x: 1 },
    });
    expect(job).toEqual({
      prompt: "a knight",
      negativePrompt: "blurry",
      width: 64,
      height: 64,
      steps: 4,
      guidanceScale: 7.5,
      lora: { name: "pixel", strength: 0.8 },
      removeBackground: "color-key",
      pixel: { width: 32, height: 32, colors: 8, fitMode: "contain" },
    });
    expect([fitMode, preserveAspect]).toEqual(["contain", true]);
  });

  it("lets fit_mode win over preserve_aspect, and preserve_aspect false means stretch", () => {
    expect(toLegacyJob({ ...base, pixel_width: 8, pixel_height: 8, preserve_aspect: false }).fitMode).toBe("stretch");
    expect(toLegacyJob({ ...base, pixel_width: 8, pixel_height: 8, preserve_aspect: false, fit_mode: "cover" })).toMatchObject({
      fitMode: "cover",
      preserveAspect: true,
    });
  });

  it("treats null as absent, 0×0 pixel size as no pixel step, and numeric strings as numbers", () => {
    const { job, fitMode } = toLegacyJob({
      ...base,
      seed: null,
      lora_model: "None",
      pixel_width: 0,
      pixel_height: 0,
      colors: 16,
      steps: "6",
    });
    expect(job).toEqual({ ...base, steps: 6 });
    expect(fitMode).toBeNull();
  });

  it("rounds a width/height that is no multiple of 8 up, and crops back to the asked size when there is no pixel step", () => {
    const { job, fitMode, preserveAspect } = toLegacyJob({ prompt: "x", width: 1600, height: 900 });
    expect(job).toEqual({
      prompt: "x",
      width: 1600,
      height: 904,
      pixel: { width: 1600, height: 900, colors: 0, fitMode: "cover", grid: "fixed" },
    });
    // the answer describes what the client asked for: no pixel step
    expect([fitMode, preserveAspect]).toEqual([null, true]);
  });

  it("rounds up but keeps the client's pixel step as it is", () => {
    const { job, fitMode } = toLegacyJob({ prompt: "x", width: "1600", height: 900, pixel_width: 64, pixel_height: 36, colors: 16 });
    expect(job).toMatchObject({ width: 1600, height: 904, pixel: { width: 64, height: 36, colors: 16 } });
    expect(job.pixel?.fitMode).toBeUndefined();
    expect(fitMode).toBe("contain");
  });

  it("refuses bad values with INVALID_REQUEST naming the old field", () => {
    const attempt = (body: Record<string, unknown>) => {
      try {
        toLegacyJob(body);
      } catch (err) {
        return err as AppError;
      }
      throw new Error("accepted");
    };
    expect(attempt({ ...base, guidance_scale: 99 }).message).toMatch(/guidance_scale/);
    expect(attempt({ ...base, width: 2049 }).message).toMatch(/width/); // rounds to 2056, over the limit
    expect(attempt({ ...base, pixel_width: 32, pixel_height: 32, colors: 999 }).message).toMatch(/colors/);
    expect(attempt({ ...base, pixel_width: 32 }).code).toBe("INVALID_REQUEST");
    expect(attempt({ ...base, lora_model: 3 }).code).toBe("INVALID_REQUEST");
    expect(attempt({ ...base, preserve_aspect: "yes" }).code).toBe("INVALID_REQUEST");
    expect(attempt({ ...base, fit_mode: "zoom" }).code).toBe("INVALID_REQUEST");
  });
});
