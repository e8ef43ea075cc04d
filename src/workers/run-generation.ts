import { createHash } from "node:crypto";
import fsSync from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { AppError, ErrorCode, Failure, failureOf } from "../backends/error-codes";
import type { GenerateParams, GenerateResult, PixelizeParams, PixelizeResult, ProgressEvent, Timings } from "../backends/runner-contract";
import type { Logger } from "../infra/logger";
import type { LiveProgress } from "../jobs/job-events-channel";
import type { GeneratePayload } from "../jobs/job-queue";
import type { CompletedResult, JobsRepository } from "../jobs/jobs.repository";
import type { ModelsService } from "../models/models.service";
import { withDeadline } from "./job-deadline";
import { outputDirPrefix } from "./output-dirs";
import { ProgressRelay } from "./step-preview";
import { HubModels, hubNeedsOf } from "../installs/hub-models";

/** Codes worth another attempt: the runner died under the job, not the job's own fault. */
const RETRIABLE: ReadonlySet<ErrorCode> = new Set(["ENGINE_INTERNAL"]);
/**
 * The database keeps a running job's step about once a second (every step goes out live): a job shorter than that costs
 * no progress write at all, and the final step is implied by the result write.
 */
const PROGRESS_PERSIST_MS = 1_000;

/** The part of a warm runner (RunnerSupervisor) a generation needs. */
export interface GenerationRunner {
  /** The device the runner said it runs on; null while it is not known. */
  device(): string | null;
  generate(params: GenerateParams, opts: { id: string; onProgress: (p: ProgressEvent) => void }): Promise<GenerateResult>;
  /** Post-processing alone on an input PNG; no model, no progress. */
  pixelize(params: PixelizeParams, opts: { id: string }): Promise<PixelizeResult>;
  /** Asks the runner to stop request `requestId` between steps; the generate then fails with CANCELLED. */
  cancel(requestId: string): Promise<unknown>;
  /** Kills the runner process (its supervisor restarts it): the generate fails with ENGINE_INTERNAL. */
  kill(): void;
}

export type GenerationRepository = Pick<JobsRepository, "start" | "saveProgress" | "complete" | "finish" | "requeue" | "inputImage">;
export type ModelResolver = Pick<ModelsService, "resolve" | "resolveLora">;
/** Whether a job's hub model and LoRA are installed yet (src/installs/hub-models.ts). */
export type HubGate = Pick<HubModels, "readiness">;

/** Why the caller stops an attempt: a user's cancel, or a shutdown handing the job back to the queue. */
export type StopReason = "cancel" | "handBack";

export interface GenerationAttempt {
  payload: GeneratePayload;
  /** 1 for the first attempt. */
  attempt: number;
  maxAttempts: number;
}

export interface GenerationDeps {
  /** The runner of the job's engine; undefined when this worker runs none for it. */
  runner: GenerationRunner | undefined;
  repository: GenerationRepository;
  models: ModelResolver;
  /** Jobs naming hub ids wait here (still queued) until their installs are done; absent: no hub ids in jobs. */
  hub?: HubGate;
  /** Sends one step to watchers (every step, in order; previews included). */
  publishProgress(jobId: string, progress: LiveProgress): Promise<unknown>;
  /** Was the job cancelled before the caller could have told us through `signal`? */
  cancelRequested(jobId: string): Promise<boolean>;
  /** Aborted with a StopReason as its reason. */
  signal?: AbortSignal;
  /** Per-attempt budget (0: none), and how long a runner asked to stop may take before it is killed. */
  jobTimeoutMs: number;
  cancelGraceMs: number;
  /** How often a running job's step is written to its row; default PROGRESS_PERSIST_MS. */
  progressPersistMs?: number;
  /** Recorded on the row (GET /jobs/{id} `worker`). */
  workerName: string | null;
  logger: Logger;
}

/**
 * How the attempt ended, every state write already done: `retry` is back in `queued` (run it again), `handedBack` too
 * (run it again, no attempt spent), `skipped` found the row final already (cancelled while queued), `waiting` never
 * started (still queued: an install it needs is running; look again later, no attempt spent).
 */
export type GenerationOutcome =
  | { status: "completed" | "cancelled" | "skipped" | "handedBack" }
  | { status: "waiting"; installs: string[] }
  | { status: "retry" | "failed"; failure: Failure };

/**
 * One attempt of one generation job, start to end, without any queue: marks the row active, resolves the model and
 * LoRA, runs the runner's `generate` under the job's time budget while relaying its progress, verifies the PNG it wrote
 * and records the outcome through the repository's state machine. A pixelize job (`input` set) takes the same path with
 * the runner's `pixelize` on the input PNG from its row instead: no model, no progress. Errors become outcomes; only a
 * failing database (the outcome could not be written) throws.
 */
export async function runGeneration(a: GenerationAttempt, deps: GenerationDeps): Promise<GenerationOutcome> {
  const { jobId, job: request, submittedAt } = a.payload;
  const { runner, repository, logger } = deps;
  // Shut down before it started: the row is still queued, nothing to undo.
  if (deps.signal?.aborted && deps.signal.reason === "handBack") return { status: "handedBack" };
  // The cancel check (was it cancelled before the caller listened?) is a Redis round trip, whose write alone costs a
  // wake-up of Redis: it goes out once the runner has the job, and a yes stops the attempt through the same signal as
  // a cancel heard later. Only a job going back to wait for an install asks first (it is not starting anyway).
  const stop = new AbortController();
  const signal = deps.signal ? AbortSignal.any([deps.signal, stop.signal]) : stop.signal;
  let checked: Promise<void> | undefined;
  const checkCancel = () => (checked ??= signal.aborted ? Promise.resolve() : cancelCheck(jobId, deps, stop));
  const needs = hubNeedsOf(request);
  const cancelledNow = async (): Promise<GenerationOutcome | undefined> => {
    if (!(signal.aborted && signal.reason === "cancel")) return undefined;
    await repository.finish(jobId, "cancelled", "CANCELLED", "cancelled before it started");
    return { status: "cancelled" };
  };
  // Before the row turns active: a job waiting for an install stays queued and its time budget has not started.
  if (deps.hub) {
    let readiness;
    try {
      readiness = await deps.hub.readiness(needs);
    } catch (err) {
      const failure = failureOf(err);
      logger.error(`[GEN][${request.engine}] job=${jobId} failed before it started code=${failure.code} ${failure.message}`);
      await repository.finish(jobId, "failed", failure.code, failure.message);
      return { status: "failed", failure };
    }
    if (!readiness.ready) {
      await checkCancel();
      return (await cancelledNow()) ?? { status: "waiting", installs: readiness.installs.map((i) => i.id) };
    }
  }
  const early = await cancelledNow();
  if (early) return early;
  const device = runner?.device() ?? null;
  const started = await repository.start(jobId, { attempt: a.attempt, queueMs: Date.now() - submittedAt, worker: deps.workerName, device });
  if (!started) return { status: "skipped" };

  const requestId = `gen-${jobId}-${a.attempt}`;
  let outputDir: string | undefined;
  try {
    if (!runner) throw new AppError("ENGINE_UNAVAILABLE", `this worker runs no ${request.engine} runner`);
    let relay: ProgressRelay | undefined;
    let call: () => Promise<GenerateResult | PixelizeResult>;
    if (request.input) {
      const input = await repository.inputImage(jobId);
      if (!input) throw new AppError("INVALID_REQUEST", `the input image of job ${jobId} is no longer stored`);
      outputDir = makeOutputDir(jobId);
      const inputPath = path.join(outputDir, "input.png");
      await fs.writeFile(inputPath, input);
      const params: PixelizeParams = {
        jobId,
        inputPath,
        pixel: request.pixel!,
        removeBackground: request.removeBackground,
        outputDir,
      };
      call = () => runner.pixelize(params, { id: requestId });
    } else {
      // Looked up once the row is active (any hub install is done by now): a failed lookup is the job's failure.
      const { model, lora } = await resolveWeights(request, deps.models);
      outputDir = makeOutputDir(jobId);
      const dir = outputDir;
      const img2img = request.img2img ? await writeImg2imgInputs(jobId, request.img2img, dir, repository) : {};
      const params: GenerateParams = {
        jobId,
        modelSource: model.source,
        modelName: model.name,
        modelCommit: model.commit,
        prompt: request.prompt,
        negativePrompt: request.negativePrompt,
        width: request.width,
        height: request.height,
        steps: request.steps,
        guidanceScale: request.guidanceScale,
        seed: request.seed,
        scheduler: request.scheduler,
        initNoise: request.initNoise,
        previewEvery: request.previewEvery ?? null,
        ...(request.count && request.count > 1 ? { count: request.count } : {}),
        pixel: request.pixel,
        removeBackground: request.removeBackground,
        lora: lora ? { source: lora.source, strength: lora.strength, ...(lora.commit ? { commit: lora.commit } : {}) } : null,
        outputDir: dir,
        ...img2img,
      };
      // Step order kept even when a step's preview file must be read first (step-preview.ts).
      const steps = new ProgressRelay(dir, (live) => deps.publishProgress(jobId, live));
      relay = steps;
      const persistEvery = deps.progressPersistMs ?? PROGRESS_PERSIST_MS;
      let lastPersist = Date.now();
      const onProgress = (p: ProgressEvent) => {
        steps.push(p);
        const now = Date.now();
        if (now - lastPersist >= persistEvery) {
          lastPersist = now;
          void repository.saveProgress(jobId, p.step, p.totalSteps).catch(() => undefined);
        }
      };
      call = () => runner.generate(params, { id: requestId, onProgress });
    }

    if (signal.aborted) throw stopError(signal);
    let running = true;
    const generation = call().finally(() => (running = false));
    const stopOnAbort = () => stopRunner(runner, requestId, signal.reason as StopReason, () => running, deps);
    signal.addEventListener("abort", stopOnAbort, { once: true });
    void checkCancel();
    // Past the budget: ask the runner to stop between steps; if it does not within the grace, kill it (the supervisor
    // restarts it) so the next job gets a working runner. The job ends TIMEOUT, never retried.
    const result = await withDeadline(generation, {
      timeoutMs: deps.jobTimeoutMs,
      graceMs: deps.cancelGraceMs,
      onExpire: () => {
        logger.warn({ job: jobId, timeoutMs: deps.jobTimeoutMs }, "job ran past its time budget; cancelling it");
        return runner.cancel(requestId);
      },
      onGraceOver: () => {
        logger.error({ job: jobId }, "runner did not stop after the cancel; killing it");
        runner.kill();
      },
    }).finally(() => signal.removeEventListener("abort", stopOnAbort));

    // Every step's progress (and preview file) is published before the job can be seen completed: watchers close
    // their streams on the final state, and the output dir holding previews is removed right after.
    await relay?.drain();
    const png = readVerified(result.imagePath, result.sha256);
    const sha256 = result.sha256;
    const candidates = await readCandidates(result, request.count ?? 1, outputDir);
    const timings: Partial<Timings> = result.timings ?? {};
    await repository.complete(jobId, {
      device: result.device ?? device,
      png,
      sha256,
      width: result.width,
      height: result.height,
      loadMs: roundOrNull(timings.loadMs),
      generateMs: roundOrNull(timings.generateMs),
      postprocessMs: roundOrNull(timings.postprocessMs),
      pixelReport: result.pixel,
      candidates,
    });
    const tag = request.input ? `[PIXELIZE][${request.engine}] job=${jobId} ${request.width}x${request.height}` : undefined;
    logger.info(
      tag
        ? `${tag} post=${roundOrNull(timings.postprocessMs)}ms`
        : `[GEN][${request.engine}] job=${jobId} ${request.width}x${request.height} steps=${request.steps} load=${roundOrNull(timings.loadMs)}ms gen=${roundOrNull(timings.generateMs)}ms post=${roundOrNull(timings.postprocessMs)}ms`,
    );
    return { status: "completed" };
  } catch (err) {
    return settleFailure(a, { ...deps, signal }, failureOf(err));
  } finally {
    if (outputDir) await fs.rm(outputDir, { recursive: true, force: true });
  }
}

/**
 * Asks whether the job was cancelled before this worker listened, and stops the attempt if so. A failed check is
 * logged, not fatal: cancels sent from now on still arrive on the channel.
 */
function cancelCheck(jobId: string, deps: GenerationDeps, stop: AbortController): Promise<void> {
  return deps.cancelRequested(jobId).then(
    (yes) => {
      if (yes) stop.abort("cancel" satisfies StopReason);
    },
    (err: Error) => deps.logger.warn({ job: jobId, err: err.message }, "cancel check failed; the job runs"),
  );
}

/** The job's model and LoRA, looked up together; a missing model is reported before a missing LoRA. */
async function resolveWeights(request: GeneratePayload["job"], models: ModelResolver) {
  const loraLookup = request.lora ? models.resolveLora(request.lora, request.model) : Promise.resolve(null);
  loraLookup.catch(() => undefined);
  const model = await models.resolve(request.model, request.engine);
  return { model, lora: await loraLookup };
}

/**
 * An img2img job's init image (and mask) from its row into the job's directory, as the runner's params name them. The
 * row keeps both PNGs in one column, the init image's `bytes` first (JobsService.resolveImg2img).
 */
async function writeImg2imgInputs(
  jobId: string,
  spec: NonNullable<GeneratePayload["job"]["img2img"]>,
  dir: string,
  repository: GenerationRepository,
): Promise<Pick<GenerateParams, "initImagePath" | "strength" | "maskPath">> {
  const stored = await repository.inputImage(jobId);
  if (!stored) throw new AppError("INVALID_REQUEST", `the input image of job ${jobId} is no longer stored`);
  const initImagePath = path.join(dir, "init.png");
  await fs.writeFile(initImagePath, stored.subarray(0, spec.bytes));
  if (!spec.mask) return { initImagePath, strength: spec.strength };
  const maskPath = path.join(dir, "mask.png");
  await fs.writeFile(maskPath, stored.subarray(spec.bytes, spec.bytes + spec.mask.bytes));
  return { initImagePath, strength: spec.strength, maskPath };
}

/** Records why an attempt ended without a result and says what the queue should do next. */
async function settleFailure(a: GenerationAttempt, deps: GenerationDeps, failure: Failure): Promise<GenerationOutcome> {
  const { jobId, job: request } = a.payload;
  const { repository, logger } = deps;
  if (deps.signal?.aborted && deps.signal.reason === "handBack") {
    // Shutdown: back to the queue without spending an attempt; another worker (or this one restarted) runs it.
    await repository.requeue(jobId, "ENGINE_UNAVAILABLE", "its worker shut down mid-job; handed back to the queue");
    logger.warn({ job: jobId }, "job handed back to the queue at shutdown");
    return { status: "handedBack" };
  }
  // A cancelled attempt ends cancelled whatever the runner answered last: ENGINE_INTERNAL when the grace kill hit it.
  if (failure.code === "CANCELLED" || (deps.signal?.aborted && deps.signal.reason === "cancel")) {
    const message =
      failure.code === "CANCELLED"
        ? failure.message
        : `cancelled; its runner did not stop within the grace and was killed (${failure.message})`;
    await repository.finish(jobId, "cancelled", "CANCELLED", message);
    return { status: "cancelled" };
  }
  if (RETRIABLE.has(failure.code) && a.attempt < a.maxAttempts) {
    logger.warn({ job: jobId, code: failure.code, attempt: a.attempt, attempts: a.maxAttempts }, "job attempt failed; retrying");
    await repository.requeue(jobId, failure.code, failure.message);
    return { status: "retry", failure };
  }
  logger.error(`[GEN][${request.engine}] job=${jobId} failed code=${failure.code} ${failure.message}`);
  await repository.finish(jobId, "failed", failure.code, failure.message);
  return { status: "failed", failure };
}

/**
 * Asks the runner to stop between steps (it keeps its loaded models). A step can be long (minutes for a large picture
 * on a CPU), and a cancelled job must not hold the worker that long: like a timeout or a hand-back, if the runner is
 * still on this request after the grace it is killed (its supervisor restarts it), so the worker is free within
 * PIXELAI_CANCEL_GRACE_MS either way.
 */
function stopRunner(
  runner: GenerationRunner,
  requestId: string,
  reason: StopReason,
  stillRunning: () => boolean,
  deps: GenerationDeps,
): void {
  void Promise.resolve()
    .then(() => runner.cancel(requestId))
    .catch((err) => deps.logger.warn({ request: requestId, err: (err as Error).message }, "cancel request to runner failed"));
  if (reason === "handBack") deps.logger.warn({ request: requestId }, "handing the active job back; stopping its runner");
  setTimeout(() => {
    if (!stillRunning()) return;
    deps.logger.warn({ request: requestId, reason, graceMs: deps.cancelGraceMs }, "runner did not stop within the grace; killing it");
    runner.kill();
  }, deps.cancelGraceMs).unref();
}

function stopError(signal: AbortSignal): AppError {
  return signal.reason === "handBack"
    ? new AppError("ENGINE_UNAVAILABLE", "its worker is shutting down")
    : new AppError("CANCELLED", "cancelled before it started");
}

/**
 * The attempt's output dir. Synchronous, like readVerified below: both sit on the job's path (before the runner starts,
 * after it answers), where one call of a few microseconds beats the thread-pool hand-offs of the promise API, each of
 * which costs a wake-up of an idle core (docs/environment.md, "Measuring the service overhead").
 */
function makeOutputDir(jobId: string): string {
  return fsSync.mkdtempSync(outputDirPrefix(jobId));
}

/** The result PNG (a few KiB to a few MiB), read in one synchronous call: see makeOutputDir. */
function readVerified(file: string, sha256: string): Buffer {
  const png = fsSync.readFileSync(file);
  if (createHash("sha256").update(png).digest("hex") !== sha256) {
    throw new AppError("ENGINE_INTERNAL", "result PNG does not match the sha256 the runner reported");
  }
  return png;
}

/**
 * Candidates 1.. of a job with count > 1, each PNG read and checked against its hash. The runner must return exactly
 * `count` of them, in index order, in the job's own temp dir: a job that asked for 4 and got 3 failed, it did not
 * "complete with fewer".
 */
async function readCandidates(
  result: GenerateResult | PixelizeResult,
  count: number,
  outputDir: string | undefined,
): Promise<NonNullable<CompletedResult["candidates"]>> {
  if (count <= 1) return [];
  const images = "images" in result ? (result.images ?? []) : [];
  if (images.length !== count || images.some((image, i) => image.index !== i)) {
    throw new AppError("ENGINE_INTERNAL", `the runner returned ${images.length} candidates for count ${count}`);
  }
  const out: NonNullable<CompletedResult["candidates"]> = [];
  for (const image of images.slice(1)) {
    if (!outputDir || path.dirname(path.resolve(image.imagePath)) !== path.resolve(outputDir)) {
      throw new AppError("ENGINE_INTERNAL", `candidate ${image.index} is not in the job's output directory`);
    }
    const png = readVerified(image.imagePath, image.sha256);
    out.push({ index: image.index, png, sha256: image.sha256, width: image.width, height: image.height });
  }
  return out;
}

function roundOrNull(v: unknown): number | null {
  return typeof v === "number" && Number.isFinite(v) ? Math.round(v) : null;
}
