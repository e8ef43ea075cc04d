import { AppError } from "../backends/error-codes";
import type { Logger } from "../infra/logger";
import { JOB_ID_PATTERN, newJobId } from "../jobs/ids";
import type { InstallQueue } from "./install-queue";
import { parseHubRef } from "./hub-id";
import type { InstallRequest, InstallView } from "./installs.dto";
import { InstallRecord, InstallsRepository } from "./installs.repository";

export interface InstallsServiceOptions {
  /** True when the torch engine runs fp16 (CUDA, MPS): `variant: auto` then prefers the repository's fp16 weights. */
  prefersFp16(): Promise<boolean>;
}

/** The API side of installs: start (or join) one, and report it. The work happens in the install worker. */
export class InstallsService {
  constructor(
    private readonly repo: InstallsRepository,
    private readonly queue: InstallQueue,
    private readonly options: InstallsServiceOptions,
    private readonly logger: Logger,
  ) {}

  /**
   * POST /models with a hub id as `source`: the id (and `revision`, inline after '@' or as the field) is checked with the
   * hub's rules first — bad input is a 400 and nothing is fetched.
   */
  requestRegistration(body: {
    name: string;
    source: string;
    kind: "base" | "lora";
    revision?: string;
    variant?: "fp16" | "none" | "auto";
    weightName?: string;
    architecture?: "sd" | "sdxl";
  }): Promise<{ view: InstallView; created: boolean }> {
    const ref = parseHubRef(body.source, body.revision, "source");
    if (
      body.weightName !== undefined &&
      (body.kind !== "lora" || !/^[^\\/][^\\]*$/.test(body.weightName) || body.weightName.split("/").includes(".."))
    ) {
      throw new AppError("INVALID_REQUEST", "weightName is a file inside a hub LoRA repository", { field: "weightName" });
    }
    return this.request({
      repoId: ref.repoId,
      revision: ref.revision,
      kind: body.kind,
      name: body.name,
      variant: body.variant ?? "auto",
      weightName: body.weightName,
      architecture: body.architecture,
    });
  }

  /** Queues an install; an identical one still queued or running is answered instead (`created: false`). */
  async request(req: InstallRequest): Promise<{ view: InstallView; created: boolean }> {
    const variant =
      req.kind === "lora" || req.variant === "none" ? null : req.variant === "fp16" || (await this.options.prefersFp16()) ? "fp16" : null;
    const key = { name: req.name, repoId: req.repoId, revision: req.revision, kind: req.kind, variant, weightName: req.weightName ?? null };
    const running = await this.repo.findRunning(key);
    if (running) return { view: toInstallView(running), created: false };
    const record = await this.repo.create({ id: newJobId(), ...key });
    await this.repo.ensureModelEntry({ ...key, architecture: req.architecture ?? "sd" });
    try {
      await this.queue.add({ installId: record.id });
    } catch (err) {
      await this.repo.fail(record.id, "ENGINE_UNAVAILABLE", `queue unavailable: ${(err as Error).message}`, null);
      throw new AppError("ENGINE_UNAVAILABLE", "the job queue (Redis) is not reachable; try again shortly");
    }
    this.logger.info({ install: record.id, repo: req.repoId, revision: req.revision, name: req.name, variant }, "install queued");
    return { view: toInstallView(record), created: true };
  }

  async get(id: string): Promise<InstallView> {
    const record = JOB_ID_PATTERN.test(id) ? await this.repo.find(id) : null;
    if (!record) throw new AppError("NOT_FOUND", `no install ${JSON.stringify(id).slice(0, 80)}`);
    return toInstallView(record);
  }

  async latestForName(name: string): Promise<InstallView | null> {
    const record = await this.repo.latestForName(name);
    return record ? toInstallView(record) : null;
  }

  async list(limit = 50): Promise<InstallView[]> {
    return (await this.repo.list(Math.min(Math.max(limit, 1), 200))).map(toInstallView);
  }
}

export function toInstallView(r: InstallRecord): InstallView {
  const total = r.bytesTotal === null ? null : Number(r.bytesTotal);
  const done = Number(r.bytesDone);
  return {
    id: r.id,
    name: r.name,
    repo: r.repoId,
    revision: r.revision,
    kind: r.kind === "lora" ? "lora" : "base",
    variant: r.variant,
    weightName: r.weightName,
    status: r.status as InstallView["status"],
    commit: r.commitSha,
    snapshotPath: r.snapshotPath,
    progress: {
      bytesDone: done,
      bytesTotal: total,
      bytesPresent: r.bytesPresent === null ? null : Number(r.bytesPresent),
      filesDone: r.filesDone,
      filesTotal: r.filesTotal,
      percent: total ? Math.min(100, Math.floor((100 * done) / total)) : total === 0 ? 100 : null,
      rateBps: r.rateBps === null ? null : Math.round(r.rateBps),
      etaSeconds: r.etaSeconds,
      file: r.currentFile,
    },
    attempts: r.attempts,
    ...(r.errorCode ? { error: { code: r.errorCode, message: r.errorMessage ?? "", ...(r.errorHint ? { hint: r.errorHint } : {}) } } : {}),
    createdAt: r.createdAt.toISOString(),
    startedAt: r.startedAt?.toISOString() ?? null,
    finishedAt: r.finishedAt?.toISOString() ?? null,
  };
}
