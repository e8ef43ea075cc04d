import { ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import readline from "node:readline";
import { DelayedError, Job, UnrecoverableError, Worker } from "bullmq";
import type IORedis from "ioredis";
import { isErrorCode } from "../backends/error-codes";
import type { Logger } from "../infra/logger";
import { INSTALL_QUEUE, InstallPayload } from "./install-queue";
import type { InstallRecord, InstallsRepository, SnapshotFacts } from "./installs.repository";

export interface InstallWorkerDeps {
  connection: IORedis;
  prefix: string;
  python: string;
  repoRoot: string;
  /** The models folder: snapshots land in `<modelsRoot>/.hub/<owner>/<name>/<commit>/` and are recorded relative to it. */
  modelsRoot: string;
  installs: InstallsRepository;
  /** Reads an installed snapshot with the registry's rules (snapshot-facts.ts). */
  inspect(
    kind: "base" | "lora",
    snapshotDir: string,
    weightName: string | null,
    bytesTotal: bigint,
    sha256: string | null,
  ): Promise<SnapshotFacts>;
  logger: Logger;
  lockDurationMs: number;
  stalledIntervalMs: number;
  maxStalledCount: number;
}

/** The folder (under the models root) that holds every hub snapshot; not a model name (names start with a letter or digit). */
export const HUB_FOLDER = ".hub";

/** The installer's JSON lines (python/pixelai_runner/hub_install.py). */
interface InstallerEvent {
  event: "resolved" | "progress" | "waiting" | "done" | "error";
  commit?: string;
  bytesTotal?: number;
  filesTotal?: number;
  bytesPresent?: number;
  bytesDone?: number;
  filesDone?: number;
  rateBps?: number | null;
  etaSeconds?: number | null;
  file?: string | null;
  path?: string;
  variant?: string | null;
  weightName?: string | null;
  files?: Record<string, { size: number; sha256: string | null }>;
  code?: string;
  message?: string;
  hint?: string;
}

class InstallFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly hint: string | null,
  ) {
    super(message);
  }
}

/**
 * Runs `python -m pixelai_runner.hub_install` for each "install" job and mirrors its progress into the Install row.
 * The installer's stdin is our pipe, so it stops when this process dies; the job then stalls, another worker picks it
 * up, and the new installer resumes the files already on disk.
 */
export class InstallWorker {
  private worker: Worker<InstallPayload> | undefined;
  private workerConnection: IORedis | undefined;
  private readonly children = new Set<ChildProcess>();
  private closing = false;

  constructor(private readonly deps: InstallWorkerDeps) {}

  get hubDir(): string {
    return path.join(this.deps.modelsRoot, HUB_FOLDER);
  }

  async start(): Promise<void> {
    // BullMQ never closes a connection it was handed, so close() must.
    this.workerConnection = this.deps.connection.duplicate({ maxRetriesPerRequest: null });
    this.worker = new Worker<InstallPayload>(INSTALL_QUEUE, (job, token) => this.process(job, token), {
      connection: this.workerConnection,
      prefix: this.deps.prefix,
      concurrency: 1,
      lockDuration: this.deps.lockDurationMs,
      stalledInterval: this.deps.stalledIntervalMs,
      maxStalledCount: this.deps.maxStalledCount,
    });
    this.worker.on("error", (err) => this.deps.logger.error({ err: err.message }, "install worker error"));
    // A job BullMQ gives up on by itself (stalled too often) must not leave its row active forever.
    this.worker.on("failed", (job, err) => {
      if (job) void this.deps.installs.fail(job.data.installId, "INSTALL_FAILED", err.message, "install again: finished bytes are kept");
    });
    await this.worker.waitUntilReady();
    this.deps.logger.info({ hubDir: this.hubDir }, "install worker started");
  }

  async process(job: Job<InstallPayload>, token?: string): Promise<{ path: string }> {
    const { installs, logger } = this.deps;
    const install = await installs.find(job.data.installId);
    if (!install || !(await installs.markActive(install.id))) return { path: "" };
    logger.info(
      { install: install.id, repo: install.repoId, revision: install.revision, attempt: install.attempts + 1 },
      "install started",
    );
    try {
      const done = await this.runInstaller(install, job);
      const snapshotDir = done.path!;
      const weightName = done.weightName ?? null;
      const bytesTotal = BigInt(done.bytesTotal ?? 0);
      const sha = weightName ? (done.files?.[weightName]?.sha256 ?? null) : null;
      const facts = await this.deps.inspect(install.kind === "lora" ? "lora" : "base", snapshotDir, weightName, bytesTotal, sha);
      await installs.complete(install, {
        commitSha: done.commit!,
        snapshotPath: path.relative(this.deps.modelsRoot, snapshotDir),
        variant: done.variant ?? null,
        weightName,
        bytesTotal,
        filesTotal: done.filesTotal ?? 0,
        facts,
      });
      logger.info({ install: install.id, repo: install.repoId, commit: done.commit, path: snapshotDir }, "install completed");
      return { path: snapshotDir };
    } catch (err) {
      if (this.closing && token) {
        // Shutdown stopped the installer: hand the job back (no outcome); the next worker resumes the files.
        await installs.handBack(install.id);
        await job.moveToDelayed(Date.now(), token);
        throw new DelayedError();
      }
      const failure =
        err instanceof InstallFailure
          ? err
          : new InstallFailure("INSTALL_FAILED", (err as Error).message, "install again: finished bytes are kept");
      const code = isErrorCode(failure.code) ? failure.code : "INSTALL_FAILED";
      await installs.fail(install.id, code, failure.message, failure.hint);
      logger.error({ install: install.id, code, err: failure.message }, "install failed");
      throw new UnrecoverableError(`${code}: ${failure.message}`);
    }
  }

  private runInstaller(install: InstallRecord, job: Job<InstallPayload>): Promise<InstallerEvent> {
    const { python, repoRoot, installs, logger } = this.deps;
    const args = ["-m", "pixelai_runner.hub_install", "--repo", install.repoId, "--revision", install.revision, "--kind", install.kind];
    args.push("--dest", this.hubDir, "--variant", install.variant ?? "none", "--exit-with-parent");
    if (install.weightName) args.push("--weight-name", install.weightName);
    return new Promise((resolve, reject) => {
      const child = spawn(python, args, {
        cwd: repoRoot,
        env: { ...process.env, PYTHONPATH: path.join(repoRoot, "python") },
        // stdin stays open for the installer's whole life: its end tells the installer this worker is gone
        stdio: ["pipe", "pipe", "pipe"],
      });
      this.children.add(child);
      let outcome: InstallerEvent | undefined;
      const tail: string[] = [];
      // Row writes in arrival order, so a late progress write never lands after the outcome.
      let writes: Promise<unknown> = Promise.resolve();
      const write = (fn: () => Promise<unknown>) =>
        (writes = writes.then(fn).catch((err) => logger.warn({ err: (err as Error).message }, "install progress write failed")));
      readline.createInterface({ input: child.stdout! }).on("line", (line) => {
        let e: InstallerEvent;
        try {
          e = JSON.parse(line) as InstallerEvent;
        } catch {
          return; // not one of the installer's lines
        }
        if (e.event === "resolved") {
          write(() =>
            installs.resolved(install.id, {
              commitSha: e.commit!,
              bytesTotal: e.bytesTotal!,
              filesTotal: e.filesTotal!,
              bytesPresent: e.bytesPresent!,
            }),
          );
        } else if (e.event === "progress") {
          write(() =>
            installs.progress(install.id, {
              bytesDone: e.bytesDone ?? 0,
              filesDone: e.filesDone ?? 0,
              rateBps: e.rateBps ?? null,
              etaSeconds: e.etaSeconds ?? null,
              file: e.file ?? null,
            }),
          );
          const percent = e.bytesTotal ? Math.floor((100 * (e.bytesDone ?? 0)) / e.bytesTotal) : 0;
          void job.updateProgress(percent).catch(() => undefined);
        } else if (e.event === "waiting") {
          logger.info({ install: install.id }, "install waits for another install of the same repository");
        } else if (e.event === "done" || e.event === "error") {
          outcome = e;
        }
      });
      readline.createInterface({ input: child.stderr! }).on("line", (line) => {
        tail.push(line);
        if (tail.length > 20) tail.shift();
      });
      child.on("error", (err) => {
        this.children.delete(child);
        reject(new InstallFailure("INSTALL_FAILED", `cannot start the installer: ${err.message}`, null));
      });
      child.on("close", (code, signal) => {
        this.children.delete(child);
        void writes.then(() => {
          if (outcome?.event === "done" && outcome.path && outcome.commit) resolve(outcome);
          else if (outcome?.event === "error")
            reject(new InstallFailure(outcome.code ?? "INSTALL_FAILED", outcome.message ?? "install failed", outcome.hint ?? null));
          else
            reject(new InstallFailure("INSTALL_FAILED", `installer exited with ${signal ?? code}: ${tail.join(" | ").slice(-1500)}`, null));
        });
      });
    });
  }

  async close(): Promise<void> {
    // An installer mid-download stops with its worker and its job is handed back (process()): no shutdown waits for a
    // multi-gigabyte download, and none is lost.
    this.closing = true;
    for (const child of this.children) child.stdin?.end();
    await this.worker?.close();
    await this.workerConnection?.quit().catch(() => undefined);
  }
}
