import { createHash } from "node:crypto";
import { AppError, isErrorCode } from "../backends/error-codes";
import type { Logger } from "../infra/logger";
import type { ModelRecord } from "../models/models.repository";
import { notInstalledError } from "../models/models.service";
import { HubRef, formatHubRef, isHubReference, parseHubRef, registryNameFor } from "./hub-id";
import type { InstallQueue } from "./install-queue";
import type { InstallView } from "./installs.dto";
import type { InstallRecord, InstallsRepository } from "./installs.repository";
import { InstallsService, toInstallView } from "./installs.service";

/** A hub reference a job (or the default model) depends on. */
export interface HubNeed {
  ref: HubRef;
  kind: "base" | "lora";
  /** The request field it came from, for error details. */
  field: "model" | "lora.name";
}

/** The hub references of a job's model and LoRA (local names are not hub needs). Bad ids: 400 naming the field. */
export function hubNeedsOf(job: { model: string; lora?: { name: string } | null }): HubNeed[] {
  const needs: HubNeed[] = [];
  if (isHubReference(job.model)) needs.push({ ref: parseHubRef(job.model, null, "model"), kind: "base", field: "model" });
  if (job.lora && isHubReference(job.lora.name)) {
    needs.push({ ref: parseHubRef(job.lora.name, null, "lora.name"), kind: "lora", field: "lora.name" });
  }
  return needs;
}

/** A job's hub references, normalised (`owner/name`, `@revision` only when not the default): what the job row keeps. */
export function normalisedHubReference(reference: string, field: "model" | "lora.name"): string {
  return isHubReference(reference) ? formatHubRef(parseHubRef(reference, null, field)) : reference;
}

export type HubReadiness = { ready: true } | { ready: false; installs: InstallView[] };

export interface HubModelsDeps {
  /** Installed registry entries by hub reference (ModelsService.installedHub) and entries by name. */
  models: {
    installedHub(ref: HubRef, kind: "base" | "lora"): Promise<ModelRecord | null>;
    findByName(name: string): Promise<ModelRecord | null>;
  };
  installs: InstallsService;
  installsRepo: InstallsRepository;
  queue: Pick<InstallQueue, "state" | "add">;
  /** PIXELAI_AUTO_INSTALL_MODELS: off → a job naming an uninstalled hub id is refused (409 MODEL_NOT_INSTALLED). */
  autoInstall: boolean;
  logger: Logger;
}

/**
 * Generation's side of hub installs: whether a job's hub model and LoRA are installed, and the install each waits on.
 *
 * A job names a hub reference; the registry entry its install creates is found by (repository, revision, kind), never
 * by name and never on disk, so a job joins any install of the same reference, however it was started. The job itself
 * carries the waiting: it stays `queued` and the generation worker re-checks it on a timer (a delayed BullMQ job), so
 * a worker that dies while a job waits loses nothing — the job is in Redis, the install in its own queue.
 */
export class HubModels {
  constructor(private readonly deps: HubModelsDeps) {}

  get autoInstall(): boolean {
    return this.deps.autoInstall;
  }

  async isInstalled(need: HubNeed): Promise<boolean> {
    return (await this.deps.models.installedHub(need.ref, need.kind)) !== null;
  }

  /**
   * Submit time: every need not installed yet joins the install of its reference that is running, or starts one (the
   * job then waits for it). With auto-install off: 409 MODEL_NOT_INSTALLED naming the install call, nothing started.
   */
  async prepare(needs: HubNeed[]): Promise<InstallView[]> {
    const missing: HubNeed[] = [];
    for (const need of needs) if (!(await this.isInstalled(need))) missing.push(need);
    if (missing.length && !this.deps.autoInstall) throw notInstalledError(missing[0].ref, missing[0].kind, missing[0].field);
    const views: InstallView[] = [];
    for (const need of missing) {
      const running = await this.runningInstall(need);
      views.push(running ? toInstallView(running) : await this.start(need));
    }
    return views;
  }

  /**
   * Worker time, before the job starts (its time budget starts only once this says ready): ready, still waiting (the
   * installs), or an AppError with the failed install's code — the job fails with it.
   */
  async readiness(needs: HubNeed[]): Promise<HubReadiness> {
    const waiting: InstallView[] = [];
    for (const need of needs) {
      if (await this.isInstalled(need)) continue;
      const latest = await this.deps.installsRepo.latestFor(key(need));
      if (latest && (latest.status === "queued" || latest.status === "active")) {
        const checked = await this.keepGoing(latest);
        if (checked.status === "failed") throw installFailure(need, checked);
        waiting.push(toInstallView(checked));
      } else if (latest?.status === "failed") {
        throw installFailure(need, latest);
      } else {
        // Never installed, or installed and since replaced in the registry: install (again) when allowed.
        if (!this.deps.autoInstall) throw notInstalledError(need.ref, need.kind, need.field);
        waiting.push(await this.start(need));
      }
    }
    return waiting.length ? { ready: false, installs: waiting } : { ready: true };
  }

  /** GET /jobs/{id} of a queued job: the latest install of each hub reference it needs that is not installed yet. */
  async waitingFor(needs: HubNeed[]): Promise<InstallView[]> {
    const views: InstallView[] = [];
    for (const need of needs) {
      if (await this.isInstalled(need)) continue;
      const latest = await this.deps.installsRepo.latestFor(key(need));
      if (latest) views.push(toInstallView(latest));
    }
    return views;
  }

  private async runningInstall(need: HubNeed): Promise<InstallRecord | null> {
    const latest = await this.deps.installsRepo.latestFor(key(need));
    return latest && (latest.status === "queued" || latest.status === "active") ? latest : null;
  }

  private async start(need: HubNeed): Promise<InstallView> {
    const { view } = await this.deps.installs.request({
      repoId: need.ref.repoId,
      revision: need.ref.revision,
      kind: need.kind,
      name: await this.nameFor(need),
      variant: "auto",
    });
    this.deps.logger.info({ install: view.id, repo: formatHubRef(need.ref), kind: need.kind }, "install started for a job");
    return view;
  }

  /**
   * The registry name of an automatic install: the repository's name, unless another entry (a local model, another
   * repository or revision) holds it; then that name with a short hash of the reference.
   */
  private async nameFor(need: HubNeed): Promise<string> {
    const plain = registryNameFor(need.ref.repoId);
    const hash = createHash("sha256")
      .update(`${need.kind}:${formatHubRef(need.ref)}`)
      .digest("hex")
      .slice(0, 8);
    for (const name of [plain, `${plain.slice(0, 55).replace(/[^A-Za-z0-9]+$/, "")}-${hash}`]) {
      const entry = await this.deps.models.findByName(name);
      if (!entry) return name;
      if (entry.origin === "hub" && entry.source === need.ref.repoId && entry.kind === need.kind && entry.revision === need.ref.revision) {
        return name;
      }
    }
    throw new AppError(
      "INVALID_REQUEST",
      `cannot pick a registry name for ${formatHubRef(need.ref)}: install it with POST /models and a name`,
      {
        field: need.field,
      },
    );
  }

  /**
   * An install the job waits on must still be on its way. Its BullMQ job lost (Redis without its data) is queued again
   * (the installer resumes what is on disk); one BullMQ gave up on without running our code (too many stalls) is
   * recorded as failed, so its jobs fail instead of waiting forever.
   */
  private async keepGoing(install: InstallRecord): Promise<InstallRecord> {
    const { state, failedReason } = await this.deps.queue.state(install.id);
    if (state === "missing") {
      // Same job id: a submit still between its row and its add makes this a no-op.
      await this.deps.queue.add({ installId: install.id });
      this.deps.logger.warn({ install: install.id }, "install missing from its queue; queued again");
    } else if (state === "failed" || state === "completed") {
      await this.deps.installsRepo.fail(
        install.id,
        "INSTALL_FAILED",
        `the install ended in the queue without a result: ${failedReason ?? state}`,
        null,
      );
      return (await this.deps.installsRepo.find(install.id)) ?? install;
    }
    return install;
  }
}

function key(need: HubNeed): { repoId: string; revision: string; kind: string } {
  return { repoId: need.ref.repoId, revision: need.ref.revision, kind: need.kind };
}

function installFailure(need: HubNeed, install: InstallRecord): AppError {
  const code = isErrorCode(install.errorCode) ? install.errorCode : "INSTALL_FAILED";
  const hint = install.errorHint ? ` (${install.errorHint})` : "";
  return new AppError(code, `install ${install.id} of ${formatHubRef(need.ref)} failed: ${install.errorMessage ?? code}${hint}`, {
    install: install.id,
    field: need.field,
  });
}
