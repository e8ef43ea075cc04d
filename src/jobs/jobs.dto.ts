/**
 * Request/response shapes of the jobs API. tsoa reads the JSDoc tags for both runtime validation and the OpenAPI spec
 * (tags must be multi-line: the one-line form is silently ignored, see docs/environment.md).
 */

import type { EngineName } from "../backends/engine-names";
import type { InstallView } from "../installs/installs.dto";

// one list of engine names (backends/engine-names.ts); re-exported because every DTO here uses it
export type { EngineName };
export type JobStatus = "queued" | "active" | "completed" | "failed" | "cancelled";
export type FitMode = "contain" | "cover" | "stretch";
/** "auto": find the implied pixel grid the model painted and read one colour per cell; "fixed": resize the canvas to the requested size. */
export type GridMode = "auto" | "fixed";
/** How colours between palette entries are drawn: nearest only, a 4×4 Bayer pattern, or Floyd–Steinberg error diffusion. */
export type DitherMode = "none" | "ordered" | "floyd-steinberg";
export type SchedulerName = "euler" | "euler_a" | "ddim" | "dpmpp_2m" | "dpmpp_2m_karras";

export interface PixelOptions {
  /**
   * Width of the pixel grid the image is reduced to.
   * @isInt
   * @minimum 1
   * @maximum 2048
   */
  width: number;
  /**
   * @isInt
   * @minimum 1
   * @maximum 2048
   */
  height: number;
  /**
   * Palette size; 0 = keep all colours. One slot is kept for transparency when the image has transparent pixels. With
   * `palette`: at most this many of its colours (those the picture uses most).
   * @isInt
   * @minimum 0
   * @maximum 256
   */
  colors?: number;
  /**
   * A fixed palette: a list of "#rrggbb" colours (1–256, e.g. the sprite's palette) or a built-in name (GET /palettes:
   * pico-8, db16, db32, endesga-32, gameboy, nes). Every opaque pixel of the result takes one of these colours, the
   * nearest in OKLab (a perceptual colour space). Absent: the palette comes from the picture (`colors`).
   */
  palette?: string | string[];
  /** Default "none". With a palette (given, or `colors` > 0), how colours between its entries are rendered. */
  dither?: DitherMode;
  fitMode?: FitMode;
  /** Default "auto": recover the art at its implied grid, then fit it to width×height with nearest-neighbour if they differ. */
  grid?: GridMode;
}

export interface LoraOptions {
  /**
   * A registered LoRA's name, or a hub id `owner/name` (optionally `@revision`): installed → its pinned snapshot; not
   * installed → the job waits for its install (started or joined), unless PIXELAI_AUTO_INSTALL_MODELS=0 (409).
   * @minLength 1
   * @maxLength 200
   */
  name: string;
  /**
   * @minimum -4
   * @maximum 4
   */
  strength?: number;
}

/**
 * Raw pixels, as Aseprite's `Image.bytes` gives them: `rgba` is the base64 of exactly width × height × 4 bytes (rows
 * top to bottom, R G B A), at most 8 MiB; another length → 400 INVALID_REQUEST.
 */
export interface RawRgbaImage {
  /**
   * @isInt
   * @minimum 1
   * @maximum 2048
   */
  width: number;
  /**
   * @isInt
   * @minimum 1
   * @maximum 2048
   */
  height: number;
  /**
   * @minLength 1
   */
  rgba: string;
}

export interface GenerateJobRequest {
  /**
   * What to draw. Required unless `inputImage` is given: an image with a prompt is image-to-image (see `strength`),
   * an image alone a pixelize job.
   * @minLength 1
   * @maxLength 2000
   */
  prompt?: string;
  /**
   * A PNG, base64-encoded (a `data:image/png;base64,` prefix is allowed), or raw RGBA `{width, height, rgba}`; at most
   * 8 MiB (413 PAYLOAD_TOO_LARGE) and 2048 px a side. With a `prompt`: image-to-image, the image scaled to
   * width × height with nearest-neighbour (hard pixel edges) and transparent pixels composited over white. Without
   * one: a pixelize job, no model runs, the image only goes through the pixel-art post-processing (`pixel`, required
   * then, and `removeBackground`); fields that only a generation uses are refused with it.
   */
  inputImage?: string | RawRgbaImage;
  /**
   * Image-to-image only (`inputImage` + `prompt`; else 400 INVALID_REQUEST): how much of the schedule runs on the noised
   * init image, `int(steps × strength)` steps. 0 = the init image unchanged, no denoising (after `pixel` at the
   * sprite's size: exactly the sprite); 1 = the text-to-image job with the same seed (the image ignored, unless a
   * `mask` is given). Default 0.75.
   * @minimum 0
   * @maximum 1
   */
  strength?: number;
  /**
   * Image-to-image only: inpainting. Same two forms as `inputImage`, and the same size as it (else 400
   * INVALID_REQUEST; it is scaled with the image by nearest-neighbour). White (opaque, light) = regenerate,
   * black or transparent = keep: those pixels come back exactly as the scaled init image has them. An engine whose
   * `/engines` features say `inpaint: false` answers 422 INPAINT_UNSUPPORTED.
   */
  mask?: string | RawRgbaImage;
  /**
   * A named recipe (GET /presets): its model, LoRA, steps, size and negative prompt fill every field this request
   * leaves out; fields given here win. Unknown → 400 INVALID_REQUEST.
   * @minLength 1
   * @maxLength 64
   */
  preset?: string;
  /**
   * @maxLength 2000
   */
  negativePrompt?: string;
  /**
   * Registry name of a base model (GET /models), or a hub id `owner/name` (optionally `@revision`): installed → its
   * pinned snapshot; not installed → the job stays queued while the install runs (started or joined; progress in
   * GET /jobs/{id} `installs`), unless PIXELAI_AUTO_INSTALL_MODELS=0 (409 MODEL_NOT_INSTALLED). Default when absent.
   * @minLength 1
   * @maxLength 200
   */
  model?: string;
  engine?: EngineName;
  /**
   * Base resolution; a multiple of 8.
   * @isInt
   * @minimum 64
   * @maximum 2048
   */
  width?: number;
  /**
   * @isInt
   * @minimum 64
   * @maximum 2048
   */
  height?: number;
  /**
   * @isInt
   * @minimum 1
   * @maximum 150
   */
  steps?: number;
  /**
   * @minimum 0
   * @maximum 30
   */
  guidanceScale?: number;
  /**
   * Absent or -1 = random; the seed used is recorded on the job.
   * @isInt
   * @minimum -1
   * @maximum 2147483647
   */
  seed?: number;
  scheduler?: SchedulerName;
  lora?: LoraOptions;
  /** false, "color-key" (flood fill from the border colour) or "birefnet". */
  removeBackground?: boolean | "birefnet" | "color-key";
  pixel?: PixelOptions;
  /**
   * 1 = highest. The default (no priority) is 1000, the lowest: jobs at it run in submission order. A higher one
   * (1–999) jumps the queue and needs the admin key (X-API-Key); without it: 403 PRIORITY_FORBIDDEN.
   * @isInt
   * @minimum 1
   * @maximum 1000
   */
  priority?: number;
  /**
   * A repeat of the same key (by the same client: admin key, else IP) within 24 h returns the same job instead of
   * queueing another; a repeat with a different body answers 409 IDEMPOTENCY_CONFLICT.
   * @minLength 1
   * @maxLength 200
   */
  idempotencyKey?: string;
  /** How initial latents are drawn: "torch" (torch CPU generator, identical on every engine) or "native". */
  initNoise?: "torch" | "native";
  /**
   * Ask for step previews: a small approximate image of the latents (no VAE decode) every `previewEvery` steps,
   * streamed by GET /jobs/{id}/events?preview=true and the /ws `progress` frames.
   */
  preview?: boolean;
  /**
   * Steps between previews (implies `preview`); default: about ten previews per job.
   * @isInt
   * @minimum 1
   * @maximum 150
   */
  previewEvery?: number;
  /**
   * Candidates to make (default 1), generated as one batch: candidate i uses seed + i, so it is the image a count 1 job
   * with that seed gives (within 1/255 at full resolution: batched matrix products round differently). Each has its own
   * PNG (GET /jobs/{id}/images/{n}); the job's cost for PIXELAI_MAX_PIXEL_STEPS is count times one candidate's.
   * @isInt
   * @minimum 1
   * @maximum 8
   */
  count?: number;
}

export interface JobProgress {
  step: number;
  totalSteps: number;
}

export interface JobTimings {
  queueMs: number | null;
  loadMs: number | null;
  generateMs: number | null;
  postprocessMs: number | null;
}

export interface JobError {
  code: string;
  message: string;
}

/** The pixel grid step of a job: the mode it ran in and, in "auto", the implied grid found in the picture. */
export interface JobPixelGrid {
  mode: GridMode;
  /**
   * "auto" only. "native": the requested size is the grid's cell count; "nearest from WxH": the art was recovered at the
   * grid's own W×H cells, then scaled to the requested size with nearest-neighbour; "fixed": no grid was found, so the
   * whole canvas was resized as grid "fixed" does.
   */
  fit?: string;
  /** Cell size in source pixels, [x, y] (non-integer in general). */
  pitch?: number[];
  /** Where the first cell border falls, modulo the pitch, [x, y] in source pixels. */
  phase?: number[];
  /** Cells across and down, [x, y]. */
  cells?: number[];
  /** How clearly the grid stands out, 0..1 (0: none found). */
  confidence?: number;
}

/** What removeBackground "color-key" keyed out. */
export interface JobPixelBackground {
  /** The background colour, [r, g, b]. */
  colour: number[];
  /** Colour distance within which border-connected pixels were made transparent. */
  tolerance: number;
}

/** What the pixel-art post-processing did (present when the job had a `pixel` spec). */
export interface JobPixelReport {
  grid: JobPixelGrid;
  background?: JobPixelBackground;
}

/** One candidate of a completed job. */
export interface JobImageView {
  /** 0-based; candidate 0 is `result.imageUrl` too. */
  index: number;
  /** The job's seed + index: a count 1 job with this seed makes the same image. */
  seed: number;
  width: number;
  height: number;
  /** Of the stored PNG; absent once retention removed it. */
  sha256?: string;
  /** GET /jobs/{id}/images/{index}. */
  imageUrl: string;
}

export interface JobResult {
  /** Candidate 0's size (every candidate's, unless pixel-art post-processing found different grids). */
  width: number;
  height: number;
  /** Candidate 0. */
  imageUrl: string;
  /** Every candidate in index order (one entry for a count 1 job). */
  images: JobImageView[];
  /** True once retention removed the image (the job's record stays); imageUrl then answers 404 NOT_FOUND. */
  pruned?: boolean;
  pixel?: JobPixelReport;
}

/** "generate": text to image; "img2img": an input image and a prompt; "pixelize": an input image through the pixel-art post-processing only. */
export type JobKind = "generate" | "img2img" | "pixelize";

export interface JobView {
  id: string;
  kind: JobKind;
  status: JobStatus;
  /** The engine whose runner ran it (a pixelize job runs on any runner, without a model). */
  engine: EngineName;
  /** Registry name of the base model; "" for a pixelize job (no model). */
  model: string;
  /** "" for a pixelize job. */
  prompt: string;
  /** Base resolution; a pixelize job's input size. */
  width: number;
  height: number;
  /** 0 for a pixelize job. */
  steps: number;
  device: string | null;
  /** The worker process (hostname:pid) that ran the latest attempt; null until a worker picks the job up. */
  worker: string | null;
  seed: number;
  progress: JobProgress;
  attempts: number;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  timings: JobTimings;
  error?: JobError;
  result?: JobResult;
  /** A queued job waiting for its hub model or LoRA: the install(s) it waits on, with their progress. */
  installs?: InstallView[];
}

export interface SubmittedJob {
  id: string;
  status: JobStatus;
  engine: EngineName;
  model: string;
  seed: number;
}

export interface JobPage {
  items: JobView[];
  /** Pass as `cursor` to get the next (older) page; null on the last page. */
  nextCursor: string | null;
}

/** What the queue carries to a worker: the request with every default applied and the seed resolved. */
export interface ResolvedJob {
  prompt: string;
  negativePrompt: string | null;
  /** A registry name or a normalised hub reference (the worker resolves it to the installed snapshot). */
  model: string;
  engine: EngineName;
  width: number;
  height: number;
  steps: number;
  guidanceScale: number;
  seed: number;
  scheduler: SchedulerName;
  lora: { name: string; strength: number } | null;
  removeBackground: false | "birefnet" | "color-key";
  pixel: {
    width: number;
    height: number;
    colors: number;
    fitMode: FitMode;
    grid?: GridMode;
    /** Resolved "#rrggbb" colours (a built-in name is expanded at submit); absent/null: from the picture. */
    palette?: string[] | null;
    dither?: DitherMode;
  } | null;
  priority: number | null;
  initNoise: "torch" | "native" | null;
  /** Steps between step previews; null/absent: none (jobs queued before previews existed have no such field). */
  previewEvery?: number | null;
  /** Candidates (seeds seed, seed + 1, …); absent: 1 (jobs queued before candidates existed have no such field). */
  count?: number;
  /**
   * A pixelize job's input image (its bytes are in the job's row, not here, to keep queue entries small); absent for
   * a generation. Then prompt is "", model "", steps 0, seed 0 and width×height the input's size.
   */
  input?: { width: number; height: number; bytes: number; sha256: string } | null;
  /**
   * An img2img job's init image and mask: their PNGs are in the job's row too (`inputPng`: the init image's `bytes`,
   * then the mask's), not here; absent for other jobs.
   */
  img2img?: {
    width: number;
    height: number;
    bytes: number;
    sha256: string;
    strength: number;
    mask: { bytes: number; sha256: string } | null;
  } | null;
}
