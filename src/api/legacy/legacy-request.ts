import { ValidateError } from "@tsoa/runtime";
import { AppError } from "../../backends/error-codes";
import type { FitMode, GenerateJobRequest } from "../../jobs/jobs.dto";
import { validateJobRequest } from "../job-validation";

/**
 * The seed server's POST /generate body (snake_case). Only these fields are read; anything else the old extension
 * sends is ignored, because that client cannot be changed and older builds of it sent fields we never knew about.
 */
export const LEGACY_GENERATE_FIELDS = [
  "prompt",
  "negative_prompt",
  "width",
  "height",
  "steps",
  "guidance_scale",
  "seed",
  "lora_model",
  "lora_strength",
  "remove_background",
  "pixel_width",
  "pixel_height",
  "colors",
  "preserve_aspect",
  "fit_mode",
] as const;

export interface LegacyJob {
  job: GenerateJobRequest;
  fitMode: FitMode | null;
  preserveAspect: boolean;
}

const V1_TO_LEGACY: Record<string, string> = {
  negativePrompt: "negative_prompt",
  guidanceScale: "guidance_scale",
  lora: "lora_model",
  "lora.name": "lora_model",
  "lora.strength": "lora_strength",
  removeBackground: "remove_background",
  pixel: "pixel_width",
  "pixel.width": "pixel_width",
  "pixel.height": "pixel_height",
  "pixel.colors": "colors",
  "pixel.fitMode": "fit_mode",
};

/** "None", "" or nothing: the old extension's way of saying "no LoRA". */
const NO_LORA = new Set(["", "none", "null"]);

/**
 * Maps an old-client LoRA reference to a registry name: `loras/<file>.safetensors` (its local LoRA folder) → `<file>`;
 * a hub id such as `nerijs/pixel-art-xl` stays as it is (registered under that name, or LORA_NOT_FOUND).
 */
export function legacyLoraName(value: string): string | null {
  const trimmed = value.trim();
  if (NO_LORA.has(trimmed.toLowerCase())) return null;
  const local = /^(?:\.\/)?loras[\\/]([^\\/]+)\.safetensors$/i.exec(trimmed);
  if (local) return local[1];
  const bare = /^([^\\/]+)\.safetensors$/i.exec(trimmed);
  if (bare) return bare[1];
  return trimmed;
}

/** null and undefined both mean "not given" (Python clients send None as null). */
function given(body: Record<string, unknown>, key: string): unknown {
  const v = body[key];
  return v === null ? undefined : v;
}

const NUMERIC = /^\s*-?\d+(\.\d+)?\s*$/;

/** The seed server read numbers with int()/float(), so "512" worked there; v1 wants JSON numbers. */
function givenNumber(body: Record<string, unknown>, key: string): unknown {
  const v = given(body, key);
  return typeof v === "string" && NUMERIC.test(v) ? Number(v) : v;
}

/**
 * Builds the v1 job from an old-client body and validates it with the POST /jobs rules (so every limit is the same).
 * Decisions for fields v1 spells differently:
 * - remove_background: true → "color-key" (works on every engine, needs no extra model; BiRefNet may be unavailable).
 *   The v1 strings ("color-key", "birefnet") are passed through.
 * - preserve_aspect: true → fitMode "contain", false → "stretch"; an explicit fit_mode wins.
 * - pixel_width/pixel_height: both set (and not 0) → the pixel-art step; both absent or 0 → the raw image (colors is
 *   then ignored: v1 only quantises inside the pixel step).
 * - numbers sent as numeric strings ("512") are read as numbers, as the seed server's int()/float() did.
 * - width/height that are not multiples of 8 (the old client's 16:9 preset, 1600×900) are rounded up to the next
 *   multiple for generation; without a pixel step the image is then cropped back to the size asked for (a fixed-grid
 *   `cover` fit at scale 1 keeps every pixel it does not cut), with one it is fitted to the pixel size as always.
 */
export function toLegacyJob(body: Record<string, unknown>): LegacyJob {
  const job: Record<string, unknown> = {};
  const copy = (from: string, to: string, read = given) => {
    const v = read(body, from);
    if (v !== undefined) job[to] = v;
  };
  copy("prompt", "prompt");
  copy("negative_prompt", "negativePrompt");
  copy("width", "width", givenNumber);
  copy("height", "height", givenNumber);
  const asked: Record<string, number> = {};
  for (const side of ["width", "height"]) {
    const v = job[side];
    if (typeof v === "number" && Number.isInteger(v) && v > 0 && v % 8 !== 0) {
      asked[side] = v;
      job[side] = Math.ceil(v / 8) * 8;
    }
  }
  copy("steps", "steps", givenNumber);
  copy("guidance_scale", "guidanceScale", givenNumber);
  copy("seed", "seed", givenNumber);

  const lora = given(body, "lora_model");
  if (lora !== undefined) {
    if (typeof lora !== "string")
      throw new AppError("INVALID_REQUEST", 'lora_model must be a string ("None" for no LoRA)', { field: "lora_model" });
    const name = legacyLoraName(lora);
    if (name) {
      const strength = givenNumber(body, "lora_strength");
      job.lora = strength === undefined ? { name } : { name, strength };
    }
  }

  const bg = given(body, "remove_background");
  if (bg !== undefined) job.removeBackground = bg === true ? "color-key" : bg;

  const fitGiven = given(body, "fit_mode");
  const preserve = given(body, "preserve_aspect");
  if (preserve !== undefined && typeof preserve !== "boolean") {
    throw new AppError("INVALID_REQUEST", "preserve_aspect must be true or false", { field: "preserve_aspect" });
  }
  const fitMode = fitGiven !== undefined ? fitGiven : preserve === false ? "stretch" : preserve === true ? "contain" : undefined;

  const pw = givenNumber(body, "pixel_width");
  const ph = givenNumber(body, "pixel_height");
  const off = (v: unknown) => v === undefined || v === 0;
  if (!(off(pw) && off(ph))) {
    if (off(pw) || off(ph)) {
      throw new AppError("INVALID_REQUEST", "pixel_width and pixel_height go together (both set, or both 0/absent)", {
        field: off(pw) ? "pixel_width" : "pixel_height",
      });
    }
    const pixel: Record<string, unknown> = { width: pw, height: ph };
    const colors = givenNumber(body, "colors");
    if (colors !== undefined) pixel.colors = colors;
    if (fitMode !== undefined) pixel.fitMode = fitMode;
    job.pixel = pixel;
  } else if (asked.width !== undefined || asked.height !== undefined) {
    job.pixel = { width: asked.width ?? job.width, height: asked.height ?? job.height, colors: 0, fitMode: "cover", grid: "fixed" };
  }
  const pixelAsked = !(off(pw) && off(ph));
  if (!pixelAsked && fitGiven !== undefined && !["contain", "cover", "stretch"].includes(fitGiven as string)) {
    // without a pixel step fit_mode has no effect, but a value the old server would have refused is still refused
    throw new AppError("INVALID_REQUEST", "fit_mode must be contain, cover or stretch", { field: "fit_mode" });
  }

  let validated: GenerateJobRequest;
  try {
    validated = validateJobRequest(job);
  } catch (err) {
    if (!(err instanceof ValidateError)) throw err;
    // Name the fields as the old client sent them, not as v1 spells them.
    const fields = Object.fromEntries(
      Object.entries(err.fields).map(([key, v]) => {
        const v1 = key.replace(/^body\.?/, "");
        return [V1_TO_LEGACY[v1] ?? v1, v.message];
      }),
    );
    const summary = Object.entries(fields)
      .map(([k, m]) => `${k}: ${m}`)
      .join("; ");
    throw new AppError("INVALID_REQUEST", `invalid request: ${summary}`, { fields });
  }
  const effectiveFit: FitMode | null = pixelAsked && validated.pixel ? (validated.pixel.fitMode ?? "contain") : null;
  return {
    job: validated,
    fitMode: effectiveFit,
    preserveAspect: effectiveFit === null ? preserve !== false : effectiveFit !== "stretch",
  };
}
