import express, { ErrorRequestHandler, Request, Response, Router } from "express";
import { AppError, ERROR_CODES, isErrorCode } from "../../backends/error-codes";
import type { Logger } from "../../infra/logger";
import type { JobView } from "../../jobs/jobs.dto";
import { loraMisfit } from "../../models/lora-fit";
import { expressAuthentication } from "../authentication";
import { toErrorBody } from "../error-handler";
import { pngToRgba } from "../job-validation";
import type { ApiServices } from "../services";
import { submitterOfRequest } from "../submitter";
import { toLegacyJob } from "./legacy-request";
import { legacyFailure } from "./legacy-shape";
import { isHubReference } from "../../installs/hub-id";
import { PRESETS } from "../../presets/presets";
import type { FitFacts } from "../../models/lora-fit";

/** The seed server's status words for GET /progress. */
const LEGACY_STATUS: Record<JobView["status"], string> = {
  queued: "generating",
  active: "generating",
  completed: "completed",
  failed: "error",
  cancelled: "canceled",
};

function bodyOf(req: Request): Record<string, unknown> {
  const body: unknown = req.body;
  if (body === undefined) return {};
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new AppError("INVALID_REQUEST", "the body must be a JSON object");
  }
  return body as Record<string, unknown>;
}

function sendFailure(res: Response, code: string, error: string, extra: Record<string, unknown> = {}): void {
  const status = isErrorCode(code) ? ERROR_CODES[code] : 500;
  res.status(status).json(legacyFailure(code, error, extra));
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/**
 * The seed Flask server's routes, kept so its Aseprite extension works unchanged against http://127.0.0.1:5000
 * (docs/design.md "Legacy routes"). Jobs go through the normal queue (source "legacy", listed in GET /jobs); answers and
 * errors keep the old shapes: `{success:true, …}` / `{success:false, error, code}`. GET /health and GET /models are
 * v1 routes that carry the old fields too, so they are not here.
 */
export function createLegacyRouter(deps: ApiServices, logger: Logger): Router {
  const router = Router();
  // Own parser: a malformed body must be answered in the legacy shape, which the app-level parser cannot do.
  const json = express.json({ limit: "64kb", type: () => true, strict: true });

  router.post("/generate", json, async (req, res) => {
    const started = Date.now();
    const legacy = toLegacyJob(await withLocalLoraName(deps, bodyOf(req)));
    const submitter = submitterOfRequest(req, deps.config.apiKey);
    let warning: string | undefined;
    let submitted;
    try {
      submitted = await deps.jobs.submit(legacy.job, "legacy", submitter);
    } catch (err) {
      // The old client sends a LoRA on every request, whatever the engine; the seed server ignored what it could not
      // apply. Both engines apply LoRAs now, so this is left for a file an engine cannot run (MLX: LoHa/LoKr, DoRA…):
      // drop it and say so rather than fail. JobsService alone decides what an engine can apply.
      if (!(err instanceof AppError && err.code === "LORA_UNSUPPORTED_ENGINE" && legacy.job.lora)) throw err;
      warning = `LoRA ${legacy.job.lora.name} was not applied: ${err.message}`;
      const { lora: _dropped, ...withoutLora } = legacy.job;
      submitted = await deps.jobs.submit(withoutLora, "legacy", submitter);
    }
    // The old client blocks on this request; when it gives up, stop waiting (the job itself runs on, in history).
    const abort = new AbortController();
    const onClose = () => {
      if (!res.writableEnded) abort.abort();
    };
    res.on("close", onClose);
    let view: JobView;
    try {
      view = await deps.events.waitForFinal(submitted.id, abort.signal);
    } catch (err) {
      if ((err as Error).name === "AbortError") return;
      throw err;
    } finally {
      res.off("close", onClose);
    }
    if (view.status === "cancelled") {
      return sendFailure(res, "CANCELLED", view.error?.message ?? "the generation was cancelled", {
        generation_id: view.id,
        ...(warning ? { warning } : {}),
      });
    }
    if (view.status !== "completed") {
      return sendFailure(res, view.error?.code ?? "ENGINE_INTERNAL", view.error?.message ?? "the generation failed", {
        generation_id: view.id,
        ...(warning ? { warning } : {}),
      });
    }
    const { width, height, rgba } = pngToRgba(await deps.jobs.image(view.id));
    res.json({
      success: true,
      image: {
        base64: rgba.toString("base64"),
        width,
        height,
        mode: "rgba",
        fit_mode: legacy.fitMode,
        preserve_aspect: legacy.preserveAspect,
      },
      seed: view.seed,
      prompt: view.prompt,
      generation_time: round((Date.now() - started) / 1000, 3),
      generation_id: view.id,
      engine: view.engine,
      model: view.model,
      ...(warning ? { warning } : {}),
    });
  });

  router.get("/progress/:id", async (req, res) => {
    const view = await deps.jobs.get(String(req.params.id));
    const { step, totalSteps } = view.progress;
    const done = view.status === "completed";
    let secondsPerIt = 0;
    let eta = 0;
    if (view.status === "active" && view.startedAt && step > 0) {
      // includes the model load of the first step, so early estimates run high and settle as steps accumulate
      secondsPerIt = (Date.now() - Date.parse(view.startedAt)) / 1000 / step;
      eta = secondsPerIt * Math.max(0, totalSteps - step);
    }
    res.json({
      progress: done ? 100 : totalSteps > 0 ? Math.min(100, Math.round((step / totalSteps) * 100)) : 0,
      status: LEGACY_STATUS[view.status],
      current_step: done ? totalSteps : step,
      total_steps: totalSteps,
      eta_seconds: round(eta, 2),
      seconds_per_it: round(secondsPerIt, 3),
      job_status: view.status,
      ...(view.error ? { error: view.error.message, code: view.error.code } : {}),
    });
  });

  router.post("/cancel/:id", json, async (req, res) => {
    const view = await deps.jobs.cancel(String(req.params.id));
    res.status(202).json({ success: true, generation_id: view.id, status: LEGACY_STATUS[view.status], job_status: view.status });
  });

  // /set_engine and /load_model change the shared defaults through the same SettingsService as PUT /engines/default
  // and PUT /models/default (same checks, same admin-key rule); here they only translate the old shapes.
  router.post("/set_engine", json, async (req, res) => {
    await expressAuthentication(req, "apiKey");
    const { engine, probe } = await deps.settings.setDefaultEngine(bodyOf(req).engine);
    res.json({ success: true, engine, device: probe.device ?? null, message: `default engine is now ${engine}` });
  });

  router.post("/load_model", json, async (req, res) => {
    // The old client picks a model here and then sends /generate without one: the pick becomes the shared default.
    await expressAuthentication(req, "apiKey");
    const body = bodyOf(req);
    const name = body.model_name ?? body.model;
    if (typeof name !== "string" || !name) throw new AppError("INVALID_REQUEST", "model_name is required", { field: "model_name" });
    // A hub id not installed yet becomes the default at once and its install starts (or is joined): the old client's
    // next /generate waits for it, as the old server's first use downloaded it.
    const { model, install } = await deps.settings.setDefaultModel(name);
    const progress = install?.progress.percent == null ? "" : `, ${install.progress.percent}% done`;
    res.json({
      success: true,
      model_name: model,
      current_model: model,
      ...(install ? { install_id: install.id, install_status: install.status } : {}),
      message: install
        ? `jobs without a model now use ${model}; it is being installed (install ${install.id}, ${install.status}${progress}) and they wait for it; follow GET /installs/${install.id}`
        : `jobs without a model now use ${model}; workers load it on its first job and keep it warm`,
    });
  });

  router.get("/loras", async (_req, res) => {
    const rows = await deps.models.list();
    const currentModel = await deps.settings.defaultModel();
    // the default may be named by its hub id (an installed hub model answers to it too)
    const base = rows.find((m) => m.kind !== "lora" && (m.name === currentModel || (m.origin === "hub" && m.source === currentModel)));
    const entries = legacyLoraEntries(rows);
    const compatible = entries.filter((e) => base && loraMisfit(e.facts, base) === null).map((e) => e.id);
    res.json({
      loras: [NO_LORA, ...entries.map((e) => e.id)],
      compatible_loras: [NO_LORA, ...compatible],
      incompatible_loras: entries.map((e) => e.id).filter((id) => !compatible.includes(id)),
      current_model: currentModel,
      architecture: base?.architecture ?? null,
    });
  });

  const legacyErrors: ErrorRequestHandler = (err, req, res, _next) => {
    const { status, body } = toErrorBody(err);
    if (status >= 500) logger.error({ err: err?.message, path: req.path }, "legacy request failed");
    if (res.headersSent) return;
    res.status(status).json(legacyFailure(body.error.code, body.error.message, body.error.details ? { details: body.error.details } : {}));
  };
  router.use(legacyErrors);
  return router;
}

/** The old picker's "no LoRA" entry; its onchange only ever changes lora_model, so without it a pick is stuck. */
const NO_LORA = "None";

type ModelRow = Awaited<ReturnType<ApiServices["models"]["list"]>>[number];

/** A local LoRA's registry source (relative to loras/) as the old client names it: `loras/<file>.safetensors`. */
function legacyLocalId(source: string): string {
  return `loras/${source.replace(/\\/g, "/").replace(/^(?:\.\/)?loras\//, "")}`;
}

/**
 * GET /loras in the old server's order: hub LoRAs the registry knows (by hub id, as the old server listed them), the
 * presets' hub LoRAs not installed yet, then local files. Each carries what the fit rule (lora-fit.ts) reads; a preset's
 * LoRA is known only by its architecture until installed.
 */
function legacyLoraEntries(rows: ModelRow[]): Array<{ id: string; facts: FitFacts }> {
  const entries: Array<{ id: string; facts: FitFacts }> = [];
  const add = (id: string, facts: FitFacts) => {
    if (!entries.some((e) => e.id === id)) entries.push({ id, facts });
  };
  const loras = rows.filter((m) => m.kind === "lora");
  for (const m of loras) if (m.origin === "hub") add(m.source, m);
  for (const p of PRESETS) {
    if (p.lora && isHubReference(p.lora.name))
      add(p.lora.name, { name: p.lora.name, architecture: p.lora.architecture, crossAttentionDim: null });
  }
  for (const m of loras) if (m.origin !== "hub") add(legacyLocalId(m.source), m);
  return entries;
}

/**
 * `loras/<file>.safetensors` names a file, not a registry name: the local LoRA registered from that file answers it
 * (its name may differ from the file's). Anything else is left to toLegacyJob (hub ids pass through unchanged).
 */
async function withLocalLoraName(deps: ApiServices, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  const value = body.lora_model;
  if (typeof value !== "string" || !/^(?:\.\/)?loras[\\/].+\.safetensors$/i.test(value.trim())) return body;
  const id = legacyLocalId(value.trim());
  const row = (await deps.models.list()).find((m) => m.kind === "lora" && m.origin !== "hub" && legacyLocalId(m.source) === id);
  return row ? { ...body, lora_model: row.name } : body;
}
