import path from "node:path";
import fs from "node:fs";
import { AppError } from "../backends/error-codes";
import type { Logger } from "../infra/logger";
import { isHubReference } from "../installs/hub-id";
import { newJobId, JOB_ID_PATTERN } from "../jobs/ids";
import { folderFingerprint } from "../models/file-hash";
import type { ModelsService } from "../models/models.service";
import type { ConversionQueue } from "./conversion-queue";
import type { ConversionOptions, ConversionView, MlxModelSummary } from "./conversions.dto";
import { ConversionRecord, ConversionsRepository, quantizeOf } from "./conversions.repository";

export class ConversionsService {
  constructor(
    private readonly repo: ConversionsRepository,
    private readonly queue: ConversionQueue,
    private readonly models: ModelsService,
    private readonly logger: Logger,
  ) {}

  /**
   * Queues a diffusers → MLX conversion of a registered base model, named by its registry name or, once installed, by
   * its hub id (the conversion is filed under the registry name either way). An unchanged source (same files, sizes and
   * mtimes) with the same dtype and quantization answers with the earlier conversion — still queued, running or done —
   * instead.
   */
  async request(reference: string, options: ConversionOptions): Promise<{ view: ConversionView; created: boolean }> {
    const { dtype, quantize } = options;
    const model = isHubReference(reference) ? await this.models.findBase(reference) : await this.models.find(reference);
    if (model.kind !== "base") throw new AppError("INVALID_REQUEST", `${reference} is a LoRA; only base models are converted`);
    const name = model.name;
    const resolved = await this.models.resolve(name, "torch");
    if (!path.isAbsolute(resolved.source) || !fs.existsSync(resolved.source)) {
      throw new AppError("INVALID_REQUEST", `${name} is a hub model; download it into models/ first (conversions read local folders)`);
    }
    const fingerprint = folderFingerprint(resolved.source);
    const existing = await this.repo.findReusable(model.id, options, fingerprint);
    if (existing && (existing.status !== "completed" || (await this.models.mlxCheck(name)).verified)) {
      return { view: { ...toView(existing), reused: true }, created: false };
    }
    const id = newJobId();
    const record = await this.repo.create(id, model.id, options, fingerprint);
    try {
      await this.queue.add({ conversionId: id, model: name, dtype, quantize });
    } catch (err) {
      await this.repo.fail(id, "ENGINE_UNAVAILABLE", `queue unavailable: ${(err as Error).message}`);
      throw new AppError("ENGINE_UNAVAILABLE", "the job queue (Redis) is not reachable; try again shortly");
    }
    this.logger.info({ conversion: id, model: name, dtype, quantize }, "conversion queued");
    return { view: toView(record), created: true };
  }

  async get(id: string): Promise<ConversionView> {
    const record = JOB_ID_PATTERN.test(id) ? await this.repo.find(id) : null;
    if (!record) throw new AppError("NOT_FOUND", `no conversion ${JSON.stringify(id)}`);
    return toView(record);
  }

  async listMlx(): Promise<MlxModelSummary[]> {
    const rows = await this.repo.latestCompletedPerModel();
    return Promise.all(
      rows.map(async (r) => {
        const check = await this.models.mlxCheck(r.model.name);
        const manifest = r.manifest ? (JSON.parse(r.manifest) as { architecture?: string }) : {};
        return {
          name: r.model.name,
          conversionId: r.id,
          dtype: r.dtype,
          quantize: quantizeOf(r),
          architecture: manifest.architecture ?? r.model.architecture,
          sourceRevision: r.sourceRevision,
          converterVersion: r.converterVersion,
          createdAt: r.createdAt.toISOString(),
          fileCount: r.files?.length ?? 0,
          totalBytes: (r.files ?? []).reduce((sum, f) => sum + Number(f.sizeBytes), 0),
          verified: check.verified,
          ...(check.problem ? { problem: check.problem } : {}),
        };
      }),
    );
  }
}

export function toView(r: ConversionRecord): ConversionView {
  const status = r.status as ConversionView["status"];
  return {
    id: r.id,
    model: r.model.name,
    status,
    dtype: r.dtype,
    quantize: quantizeOf(r),
    progress: r.progress,
    createdAt: r.createdAt.toISOString(),
    finishedAt: r.finishedAt?.toISOString() ?? null,
    path: r.path,
    sourceRevision: r.sourceRevision,
    converterVersion: r.converterVersion,
    ...(r.errorCode ? { error: { code: r.errorCode, message: r.errorMessage ?? "" } } : {}),
    ...(r.manifest ? { manifest: JSON.parse(r.manifest) as Record<string, unknown> } : {}),
  };
}
