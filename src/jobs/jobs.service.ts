import { randomInt } from "node:crypto";
import { AppError } from "../backends/error-codes";
import type { Logger } from "../infra/logger";
import type { ModelsService } from "../models/models.service";
import { isHubReference } from "../installs/hub-id";
import type { EngineProbe } from "../backends/engine-status";
import { loraRefusedBy } from "../models/lora-fit";
import { tensorNamesOf } from "../models/safetensors-header";
import type { CancelBus } from "./cancel-bus";
import type { JobEventsChannel } from "./job-events-channel";
import type { JobQueue } from "./job-queue";
import type {
  EngineName,
  GenerateJobRequest,
  JobImageView,
  JobKind,
  JobPage,
  JobPixelReport,
  JobStatus,
  JobView,
  ResolvedJob,
  SubmittedJob,
} from "./jobs.dto";
import { DuplicateIdempotencyKey, JobRecord, JobsRepository } from "./jobs.repository";
import { JOB_ID_PATTERN, newJobId } from "./ids";
import { applyPreset } from "../presets/presets";
import { HubModels, HubNeed, hubNeedsOf, normalisedHubReference } from "../installs/hub-models";
import { resolvePalette } from "../palettes/palettes";
import { readImageInput } from "./input-image";
import {
  checkJobSize,
  checkPriority,
  checkQueuedCount,
  FairUseLimits,
  LOCAL_SUBMITTER,
  NO_LIMITS,
  requestHash,
  Submitter,
} from "./fair-use";

export const DEFAULTS = {
  width: 512,
  height: 512,
  steps: 20,
  guidanceScale: 7,
  scheduler: "euler",
  colors: 0,
  fitMode: "contain",
  grid: "auto",
  strength: 0.75,
} as const;

export interface EngineDirectory {
  /** The engine for requests that name none (PUT /engines/default changes it). */
  defaultEngine(): Promise<EngineName>;
  /** The model for requests that name none (the seed's /load_model and PUT /models/default change it). */
  defaultModel(): Promise<string>;
  /** What the workers last published about an engine; null when no worker runs it (yet). */
  read(engine: EngineName): Promise<EngineProbe | null>;
}

export class JobsService {
  constructor(
    private readonly repo: JobsRepository,
    private readonly queue: JobQueue,
    private readonly cancels: CancelBus,
    /** Where a running job's latest step is (the database keeps it only about once a second). */
    private readonly live: Pick<JobEventsChannel, "liveProgress">,
    private readonly models: ModelsService,
    private readonly engines: EngineDirectory,
    private readonly logger: Logger,
    /** Hub references in jobs (src/installs/hub-models.ts); absent: only registry names are accepted. */
    private readonly hub?: HubModels,
    /** The per-client queued cap and the per-job size bound (config PIXELAI_MAX_QUEUED_PER_CLIENT, PIXELAI_MAX_PIXEL_STEPS). */
    private readonly limits: FairUseLimits = NO_LIMITS,
  ) {}

  /**
   * Validates beyond what the schema can say, records the job, queues it, and answers at once. `submitter` (who sent it:
   * src/api/submitter.ts) scopes its idempotency key and the queued cap, and says whether it may jump the queue.
   */
  async submit(req: GenerateJobRequest, source = "rest", submitter: Submitter = LOCAL_SUBMITTER): Promise<SubmittedJob> {
    const { client } = submitter;
    const hash = req.idempotencyKey ? requestHash(req) : undefined;
    if (req.idempotencyKey) {
      const existing = await this.repo.findByIdempotencyKey(client, req.idempotencyKey);
      if (existing && Date.now() - existing.createdAt.getTime() < 24 * 3600_000) return sameRequest(existing, hash!);
      // expired: the key is free again (the unique index would otherwise hand back the old job forever)
      if (existing) await this.repo.releaseIdempotencyKey(existing.id);
    }
    checkPriority(req.priority, submitter);
    // The cap's count and the request's own checks read different things, so they run together. The cap is still
    // decided first: its 429 wins over the request's errors, and no install starts for a capped client (resolve
    // starts installs last, after `allowed`).
    const allowed = this.repo.countUnfinished(client).then((n) => checkQueuedCount(n, this.limits));
    allowed.catch(() => undefined);
    const resolving = this.resolveAny(req, allowed);
    resolving.catch(() => undefined);
    await allowed;
    const { job, inputPng } = await resolving;
    const id = newJobId();
    let record: JobRecord;
    try {
      record = await this.repo.create(id, job, { idempotencyKey: req.idempotencyKey, client, requestHash: hash, source, inputPng });
    } catch (err) {
      // two concurrent submits with one key: the loser answers with the winner's job (or the conflict, if it differs)
      if (req.idempotencyKey && err instanceof DuplicateIdempotencyKey) {
        const winner = await this.repo.findByIdempotencyKey(client, req.idempotencyKey);
        if (winner) return sameRequest(winner, hash!);
      }
      throw err;
    }
    try {
      await this.queue.add({ jobId: id, job, submittedAt: record.createdAt.getTime() });
    } catch (err) {
      await this.repo.finish(id, "failed", "ENGINE_UNAVAILABLE", `queue unavailable: ${(err as Error).message}`);
      // a client retrying the 503 with the same key must get a new job, not this one that never ran
      if (req.idempotencyKey) await this.repo.releaseIdempotencyKey(id);
      throw new AppError("ENGINE_UNAVAILABLE", "the job queue (Redis) is not reachable; try again shortly");
    }
    this.logger.info({ job: id, engine: job.engine, model: job.model, size: `${job.width}x${job.height}`, steps: job.steps }, "job queued");
    return submitted(record);
  }

  /** The job a request asks for, by kind (text-to-image, img2img, pixelize), with the image bytes its row keeps. */
  private async resolveAny(req: GenerateJobRequest, allowed?: Promise<void>): Promise<{ job: ResolvedJob; inputPng?: Buffer }> {
    const img2imgOnly = IMG2IMG_ONLY.filter((field) => req[field] !== undefined);
    if (img2imgOnly.length && (req.inputImage === undefined || req.prompt === undefined)) {
      throw new AppError("INVALID_REQUEST", `${img2imgOnly.join(" and ")} need an image-to-image job (inputImage and prompt together)`, {
        field: img2imgOnly[0],
        fields: img2imgOnly,
      });
    }
    if (req.inputImage === undefined) return { job: await this.resolve(req, allowed) };
    if (req.prompt === undefined) return this.resolvePixelize(req);
    return this.resolveImg2img(req, allowed);
  }

  /**
   * An image and a prompt: a generation (every text-to-image rule applies) that starts from the image. Both images are
   * checked here and kept on the row (init PNG then mask PNG); the runner scales them (python/pixelai_runner/img2img.py).
   */
  async resolveImg2img(req: GenerateJobRequest, allowed?: Promise<void>): Promise<{ job: ResolvedJob; inputPng: Buffer }> {
    const init = await readImageInput(req.inputImage!, "inputImage");
    const mask = req.mask === undefined ? null : await readImageInput(req.mask, "mask");
    if (mask && (mask.width !== init.width || mask.height !== init.height)) {
      throw new AppError(
        "INVALID_REQUEST",
        `mask is ${mask.width}x${mask.height}; it must be the size of inputImage (${init.width}x${init.height})`,
        { field: "mask" },
      );
    }
    const { inputImage: _image, mask: _mask, strength, ...rest } = req;
    const job = await this.resolve(rest, allowed);
    const probe = await this.engines.read(job.engine).catch(() => null);
    if (probe && probe.features?.img2img === false) {
      throw new AppError("IMG2IMG_UNSUPPORTED", `engine ${job.engine} reports that it cannot run image-to-image jobs`, {
        engine: job.engine,
      });
    }
    if (mask && probe && probe.features?.inpaint !== true) {
      throw new AppError("INPAINT_UNSUPPORTED", `engine ${job.engine} reports that it cannot inpaint (mask)`, {
        engine: job.engine,
        field: "mask",
      });
    }
    job.img2img = {
      width: init.width,
      height: init.height,
      bytes: init.png.length,
      sha256: init.sha256,
      strength: strength ?? DEFAULTS.strength,
      mask: mask ? { bytes: mask.png.length, sha256: mask.sha256 } : null,
    };
    return { job, inputPng: mask ? Buffer.concat([init.png, mask.png]) : init.png };
  }

  /** `allowed`: settled before any install starts (the submitter's cap, decided while the request is checked). */
  async resolve(request: GenerateJobRequest, allowed?: Promise<void>): Promise<ResolvedJob> {
    const req = applyPreset(request);
    const width = req.width ?? DEFAULTS.width;
    const height = req.height ?? DEFAULTS.height;
    for (const [field, value] of [
      ["width", width],
      ["height", height],
    ] as const) {
      if (value % 8 !== 0) throw new AppError("INVALID_REQUEST", `${field} must be a multiple of 8 (got ${value})`, { field });
    }
    // After the preset and defaults (the job that would run), before anything is looked up or installed.
    const count = req.count ?? 1;
    checkJobSize({ width, height, steps: req.steps ?? DEFAULTS.steps, count }, this.limits);
    if (req.removeBackground === true) {
      throw new AppError("INVALID_REQUEST", 'removeBackground must be false, "color-key" or "birefnet"', { field: "removeBackground" });
    }
    const prompt = req.prompt;
    if (prompt === undefined) {
      throw new AppError("INVALID_REQUEST", "prompt is required (or send inputImage without a prompt to pixelize an image)", {
        field: "prompt",
      });
    }
    if (!prompt.trim()) throw new AppError("INVALID_REQUEST", "prompt must not be blank", { field: "prompt" });
    const engine = req.engine ?? (await this.engines.defaultEngine());
    // No probe means no worker has published yet: queue anyway (a worker may come); a probe that says no is final. Read
    // now, beside the model lookups; looked at below, after them.
    const probeRead = this.engines.read(engine).catch(() => null);
    // Hub ids are checked (400) and normalised before anything else; the job keeps them as references, resolved to the
    // installed snapshot by the worker.
    const model = normalisedHubReference(req.model ?? (await this.engines.defaultModel()), "model");
    const loraName = req.lora ? normalisedHubReference(req.lora.name, "lora.name") : null;
    const needs = hubNeedsOf({ model, lora: loraName === null ? null : { name: loraName } });
    if (needs.length && !this.hub) throw new AppError("INVALID_REQUEST", "hub ids are not available in this process; use a registry name");
    const pending: HubNeed[] = [];
    for (const need of needs) if (!(await this.hub!.isInstalled(need))) pending.push(need);
    const baseInstalled = !pending.some((n) => n.kind === "base");
    if (baseInstalled) {
      await this.models.resolve(model, engine);
    } else if (engine === "mlx") {
      throw new AppError(
        "MODEL_NOT_CONVERTED",
        `model ${model} is not installed, and MLX needs it installed and converted; use engine "torch"`,
        {
          model,
        },
      );
    }
    const probe = await probeRead;
    if (probe && !probe.available) {
      throw new AppError("ENGINE_UNAVAILABLE", `engine ${engine} is not available: ${probe.reason ?? "unknown reason"}`, { engine });
    }
    // What the engine's runner said it can do decides now, not after the job waited in the queue to fail there.
    if (req.scheduler && probe?.schedulers && !probe.schedulers.includes(req.scheduler)) {
      throw new AppError(
        "INVALID_REQUEST",
        `scheduler ${req.scheduler} is not available on engine ${engine} (it offers ${probe.schedulers.join(", ")})`,
        { engine, field: "scheduler" },
      );
    }
    let lora: ResolvedJob["lora"] = null;
    if (req.lora && loraName !== null) {
      // Both engines apply LoRAs; a runner that says otherwise (features.lora false) is believed. Without a probe the
      // runner checks the file itself.
      if (probe && probe.features?.lora !== true) {
        throw new AppError("LORA_UNSUPPORTED_ENGINE", `engine ${engine} reports that it cannot apply LoRAs`, { engine });
      }
      if (!pending.some((n) => n.kind === "lora")) {
        const resolved = await this.models.resolveLora({ ...req.lora, name: loraName }, model);
        const refusal = loraRefusedBy(engine, resolved.name, tensorNamesOf(resolved.source), probe?.loraUnsupported ?? []);
        if (refusal) throw new AppError("LORA_UNSUPPORTED_ENGINE", refusal, { engine, field: "lora.name" });
        lora = { name: isHubReference(loraName) ? loraName : resolved.name, strength: resolved.strength };
      } else {
        // checked by the worker once installed (a LoRA that does not fit its base fails the job there)
        lora = { name: loraName, strength: req.lora.strength ?? 1 };
      }
    }
    if (req.removeBackground === "birefnet" && probe && !probe.features?.backgroundRemoval) {
      throw new AppError(
        "ENGINE_UNAVAILABLE",
        `background removal "birefnet" needs BiRefNet weights registered on the ${engine} engine; none are present. Use "color-key", or register BiRefNet weights under models/birefnet`,
        { engine },
      );
    }
    // Last: an install is started only for a request that passed every other check.
    if (pending.length) {
      await allowed;
      await this.hub!.prepare(pending);
    }
    const seed = req.seed === undefined || req.seed === -1 ? randomInt(0, 2 ** 31 - 1) : req.seed;
    return {
      prompt,
      negativePrompt: req.negativePrompt ?? null,
      model,
      engine,
      width,
      height,
      steps: req.steps ?? DEFAULTS.steps,
      guidanceScale: req.guidanceScale ?? DEFAULTS.guidanceScale,
      seed,
      scheduler: req.scheduler ?? DEFAULTS.scheduler,
      lora,
      removeBackground: req.removeBackground || false,
      pixel: req.pixel ? pixelOf(req.pixel) : null,
      priority: req.priority ?? null,
      initNoise: req.initNoise ?? null,
      previewEvery: previewEveryOf(req),
      ...(count > 1 ? { count } : {}),
    };
  }

  /**
   * A job with an input image and no prompt: the image only goes through the pixel-art post-processing, on any runner
   * (no model). Fields only a generation uses are refused rather than silently ignored.
   */
  async resolvePixelize(req: GenerateJobRequest): Promise<{ job: ResolvedJob; inputPng: Buffer }> {
    const unused = GENERATION_ONLY.filter((field) => req[field] !== undefined);
    if (unused.length > 0) {
      throw new AppError("INVALID_REQUEST", `a pixelize job (inputImage without a prompt) does not take ${unused.join(", ")}`, {
        fields: unused,
      });
    }
    if (!req.pixel) {
      throw new AppError("INVALID_REQUEST", "a pixelize job needs pixel {width, height}: the pixel-art size to recover", {
        field: "pixel",
      });
    }
    if (req.removeBackground === true) {
      throw new AppError("INVALID_REQUEST", 'removeBackground must be false, "color-key" or "birefnet"', { field: "removeBackground" });
    }
    const engine = req.engine ?? (await this.engines.defaultEngine());
    // An engine that is unavailable still post-processes (its runner starts without it); only BiRefNet needs it.
    if (req.removeBackground === "birefnet") {
      const probe = await this.engines.read(engine).catch(() => null);
      if (probe && !probe.features?.backgroundRemoval) {
        throw new AppError(
          "ENGINE_UNAVAILABLE",
          `background removal "birefnet" needs BiRefNet weights on the ${engine} engine; none are present. Use "color-key"`,
          {
            engine,
          },
        );
      }
    }
    const input = await readImageInput(req.inputImage!);
    const job: ResolvedJob = {
      prompt: "",
      negativePrompt: null,
      model: "",
      engine,
      width: input.width,
      height: input.height,
      steps: 0,
      guidanceScale: 0,
      seed: 0,
      scheduler: DEFAULTS.scheduler,
      lora: null,
      removeBackground: req.removeBackground || false,
      pixel: pixelOf(req.pixel),
      priority: req.priority ?? null,
      initNoise: null,
      previewEvery: null,
      input: { width: input.width, height: input.height, bytes: input.png.length, sha256: input.sha256 },
    };
    return { job, inputPng: input.png };
  }

  async get(id: string): Promise<JobView> {
    const record = await this.findOr404(id);
    const view = toView(record);
    if (record.status === "queued" && this.hub) {
      const request = JSON.parse(record.request) as ResolvedJob;
      const waiting = await this.hub.waitingFor(hubNeedsOf(request)).catch(() => []);
      if (waiting.length) view.installs = waiting;
    }
    if (record.status === "active") {
      const live = await this.live.liveProgress(id).catch(() => null);
      if (live) view.progress = live;
    }
    return view;
  }

  async list(filter: { status?: JobStatus; engine?: EngineName; limit?: number; cursor?: string }): Promise<JobPage> {
    if (filter.cursor !== undefined && !JOB_ID_PATTERN.test(filter.cursor)) {
      throw new AppError("INVALID_REQUEST", "cursor is not a job id", { field: "cursor" });
    }
    const limit = filter.limit ?? 20;
    const rows = await this.repo.list({ ...filter, limit: limit + 1 });
    const items = rows.slice(0, limit).map(toView);
    return { items, nextCursor: rows.length > limit ? items[items.length - 1].id : null };
  }

  /** Candidate `index` (0-based; 0 is the job's image) of a completed job; NOT_FOUND past its last candidate. */
  async image(id: string, index = 0): Promise<Buffer> {
    const record = await this.findOr404(id);
    if (record.status !== "completed") {
      throw new AppError("NOT_FOUND", `job ${id} has no image (status ${record.status})`, { status: record.status });
    }
    const count = 1 + (record.images?.length ?? 0);
    if (!Number.isInteger(index) || index < 0 || index >= count) {
      throw new AppError("NOT_FOUND", `job ${id} has no image ${index}: it made ${count} (indices 0..${count - 1})`, { count });
    }
    const png = await this.repo.image(id, index);
    if (!png) throw new AppError("NOT_FOUND", `the image of job ${id} was pruned`, { pruned: true });
    return png;
  }

  /** Queued: removed from the queue at once. Active: the worker stops it between steps. Final: JOB_NOT_CANCELLABLE. */
  async cancel(id: string): Promise<JobView> {
    const record = await this.findOr404(id);
    if (record.status === "completed" || record.status === "failed" || record.status === "cancelled") {
      throw new AppError("JOB_NOT_CANCELLABLE", `job ${id} is already ${record.status}`, { status: record.status });
    }
    if (record.status === "queued" && (await this.queue.removeWaiting(id))) {
      await this.repo.finish(id, "cancelled", "CANCELLED", "cancelled before it started");
    } else {
      await this.cancels.request(id);
    }
    return this.get(id);
  }

  /**
   * Removes a finished job: its record and its BullMQ entry. Queued or active jobs are refused (JOB_NOT_FINISHED):
   * cancel first, so a worker never runs a job whose record is gone.
   */
  async delete(id: string): Promise<void> {
    const record = await this.findOr404(id);
    if (!(await this.repo.deleteFinished(id))) {
      throw new AppError("JOB_NOT_FINISHED", `job ${id} is ${record.status}; cancel it and wait for it to end before deleting it`, {
        status: record.status,
      });
    }
    await this.queue
      .removeFinished(id)
      .catch((err) => this.logger.warn({ job: id, err: (err as Error).message }, "queue entry of a deleted job not removed"));
    this.logger.info({ job: id }, "job deleted");
  }

  private async findOr404(id: string): Promise<JobRecord> {
    if (!JOB_ID_PATTERN.test(id)) throw new AppError("NOT_FOUND", `no job ${JSON.stringify(id)}`);
    const record = await this.repo.find(id);
    if (!record) throw new AppError("NOT_FOUND", `no job ${id}`);
    return record;
  }
}

/** Request fields that only an image-to-image job (inputImage + prompt) takes. */
const IMG2IMG_ONLY = ["strength", "mask"] as const satisfies readonly (keyof GenerateJobRequest)[];

/** Request fields that only a generation uses; a pixelize job refuses them. */
const GENERATION_ONLY = [
  "negativePrompt",
  "model",
  "width",
  "height",
  "steps",
  "guidanceScale",
  "seed",
  "scheduler",
  "lora",
  "initNoise",
  "preview",
  "previewEvery",
  "count",
] as const satisfies readonly (keyof GenerateJobRequest)[];

function pixelOf(pixel: NonNullable<GenerateJobRequest["pixel"]>): NonNullable<ResolvedJob["pixel"]> {
  return {
    width: pixel.width,
    height: pixel.height,
    colors: pixel.colors ?? DEFAULTS.colors,
    fitMode: pixel.fitMode ?? DEFAULTS.fitMode,
    grid: pixel.grid ?? DEFAULTS.grid,
    ...(pixel.palette !== undefined ? { palette: resolvePalette(pixel.palette) } : {}),
    ...(pixel.dither !== undefined ? { dither: pixel.dither } : {}),
  };
}

/** Previews cost a little per step (latent → RGB, a small PNG); by default about ten per job, whatever its length. */
function previewEveryOf(req: GenerateJobRequest): number | null {
  if (req.previewEvery !== undefined) return req.previewEvery;
  if (req.preview !== true) return null;
  return Math.max(1, Math.round((req.steps ?? DEFAULTS.steps) / 10));
}

/** A repeated idempotency key: the same body gets the first job, another body is refused rather than silently ignored. */
function sameRequest(existing: JobRecord, hash: string): SubmittedJob {
  if (existing.requestHash && existing.requestHash !== hash) {
    throw new AppError(
      "IDEMPOTENCY_CONFLICT",
      `idempotencyKey was already used for job ${existing.id} with a different request; use a new key for a new request`,
      { field: "idempotencyKey", id: existing.id },
    );
  }
  return submitted(existing);
}

function submitted(r: JobRecord): SubmittedJob {
  return { id: r.id, status: r.status as JobStatus, engine: r.engine as EngineName, model: r.model, seed: r.seed };
}

/** From the stored request (ResolvedJob JSON): a pixelize job carries its input's description there. */
function kindOf(r: JobRecord): JobKind {
  try {
    const job = JSON.parse(r.request) as ResolvedJob;
    return job.input ? "pixelize" : job.img2img ? "img2img" : "generate";
  } catch {
    return "generate";
  }
}

export function toView(r: JobRecord): JobView {
  const status = r.status as JobStatus;
  const view: JobView = {
    id: r.id,
    kind: kindOf(r),
    status,
    engine: r.engine as EngineName,
    model: r.model,
    prompt: r.prompt,
    width: r.width,
    height: r.height,
    steps: r.steps,
    device: r.device,
    worker: r.worker,
    seed: r.seed,
    progress: { step: status === "completed" ? r.progressTotal : r.progressStep, totalSteps: r.progressTotal },
    attempts: r.attempts,
    createdAt: r.createdAt.toISOString(),
    startedAt: r.startedAt?.toISOString() ?? null,
    finishedAt: r.finishedAt?.toISOString() ?? null,
    timings: { queueMs: r.queueMs, loadMs: r.loadMs, generateMs: r.generateMs, postprocessMs: r.postprocessMs },
  };
  if (r.errorCode && (status === "failed" || status === "cancelled")) view.error = { code: r.errorCode, message: r.errorMessage ?? "" };
  if (status === "completed" && r.resultWidth && r.resultHeight) {
    const pruned = !r.resultSha256; // retention (retention.ts) clears the hash with the bytes
    const first: JobImageView = {
      index: 0,
      seed: r.seed,
      width: r.resultWidth,
      height: r.resultHeight,
      imageUrl: `/jobs/${r.id}/images/0`,
    };
    if (!pruned) first.sha256 = r.resultSha256!;
    const others = (r.images ?? []).map((image): JobImageView => ({
      index: image.index,
      seed: r.seed + image.index,
      width: image.width,
      height: image.height,
      ...(pruned ? {} : { sha256: image.sha256 }),
      imageUrl: `/jobs/${r.id}/images/${image.index}`,
    }));
    view.result = { width: r.resultWidth, height: r.resultHeight, imageUrl: `/jobs/${r.id}/image`, images: [first, ...others] };
    if (r.pixelReport) view.result.pixel = r.pixelReport as unknown as JobPixelReport;
    if (pruned) view.result.pruned = true;
  }
  return view;
}
