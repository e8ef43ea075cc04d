import { AppError } from "../backends/error-codes";
import type { GenerateJobRequest } from "../jobs/jobs.dto";

/** A named recipe: what a request gets for every field it leaves out (`preset` in POST /jobs, a /ws submit). */
export interface Preset {
  name: string;
  description: string;
  /** Base model: a registry name or a hub id `owner/name`. */
  model: string;
  /** `name` is a registry name or a hub id; `architecture` is what the LoRA was made for (GET /loras sorts by it). */
  lora: { name: string; strength: number; architecture: "sd" | "sdxl" } | null;
  steps: number;
  width: number;
  height: number;
  negativePrompt: string;
}

/** The old Aseprite extension's default negative prompt (the value its settings start from), so a preset request
 * asks the model for what the old client asked it. */
export const OLD_CLIENT_NEGATIVE_PROMPT = "blurry, smooth, antialiased, realistic, photographic, 3d render, low quality";

export const PRESETS: readonly Preset[] = [
  {
    name: "pixel-art-xl",
    description: "The seed server's recipe: SDXL base 1.0 with the nerijs/pixel-art-xl LoRA at 0.8, 1024×1024, 15 steps",
    model: "stabilityai/stable-diffusion-xl-base-1.0",
    lora: { name: "nerijs/pixel-art-xl", strength: 0.8, architecture: "sdxl" },
    steps: 15,
    width: 1024,
    height: 1024,
    negativePrompt: OLD_CLIENT_NEGATIVE_PROMPT,
  },
];

/** The preset named `name`; unknown → 400 INVALID_REQUEST listing the known ones. */
export function findPreset(name: string): Preset {
  const preset = PRESETS.find((p) => p.name === name);
  if (!preset) {
    throw new AppError(
      "INVALID_REQUEST",
      `unknown preset ${JSON.stringify(name).slice(0, 80)}; known: ${PRESETS.map((p) => p.name).join(", ")} (GET /presets)`,
      {
        field: "preset",
      },
    );
  }
  return preset;
}

/**
 * A request with its preset's values filled into every field it leaves out (fields it gives win, `lora` as a whole);
 * the `preset` field itself is dropped. A request without a preset is returned as it is.
 */
export function applyPreset(req: GenerateJobRequest): GenerateJobRequest {
  if (req.preset === undefined) return req;
  const preset = findPreset(req.preset);
  const merged: GenerateJobRequest = {
    prompt: req.prompt,
    model: preset.model,
    steps: preset.steps,
    width: preset.width,
    height: preset.height,
    negativePrompt: preset.negativePrompt,
    ...(preset.lora ? { lora: { name: preset.lora.name, strength: preset.lora.strength } } : {}),
  };
  for (const [key, value] of Object.entries(req)) {
    if (key !== "preset" && value !== undefined) (merged as unknown as Record<string, unknown>)[key] = value;
  }
  return merged;
}
