import type { Db } from "../infra/prisma";
import type { Install } from "../generated/prisma/client";

export type InstallRecord = Install;

const RUNNING = ["queued", "active"];

/** What the installed files say about the model, for its registry entry. */
export interface SnapshotFacts {
  architecture: "sd" | "sdxl";
  crossAttentionDim: number | null;
  sizeBytes: bigint;
  /** LoRA: sha256 of the weights file. */
  sha256: string | null;
}

export interface InstallOutcome {
  commitSha: string;
  /** Relative to the models folder. */
  snapshotPath: string;
  variant: string | null;
  weightName: string | null;
  bytesTotal: bigint;
  filesTotal: number;
  facts: SnapshotFacts;
}

/**
 * Install rows, and the hub fields of the registry entry an install completes. Status moves queued → active →
 * completed | failed; a write only lands on a row that is not final yet, so a late worker cannot undo an outcome.
 */
export class InstallsRepository {
  constructor(private readonly db: Db) {}

  create(data: {
    id: string;
    name: string;
    repoId: string;
    revision: string;
    kind: string;
    variant: string | null;
    weightName: string | null;
  }): Promise<InstallRecord> {
    return this.db.install.create({ data: { ...data, status: "queued" } });
  }

  find(id: string): Promise<InstallRecord | null> {
    return this.db.install.findUnique({ where: { id } });
  }

  /** An install of exactly this request still queued or running: asking again joins it instead of starting another. */
  findRunning(q: { name: string; repoId: string; revision: string; kind: string; variant: string | null; weightName: string | null }) {
    return this.db.install.findFirst({ where: { ...q, status: { in: RUNNING } }, orderBy: { createdAt: "desc" } });
  }

  /** The newest install of a hub reference, whatever its registry name (a job joins or waits on it). */
  latestFor(q: { repoId: string; revision: string; kind: string }): Promise<InstallRecord | null> {
    return this.db.install.findFirst({ where: q, orderBy: { createdAt: "desc" } });
  }

  latestForName(name: string): Promise<InstallRecord | null> {
    return this.db.install.findFirst({ where: { name }, orderBy: { createdAt: "desc" } });
  }

  list(limit: number): Promise<InstallRecord[]> {
    return this.db.install.findMany({ orderBy: { createdAt: "desc" }, take: limit });
  }

  /**
   * A registry entry for a name that has none yet, so GET /models/{name} can show the install; an existing entry keeps
   * serving what it is until the install completes and switches it over in one write.
   */
  async ensureModelEntry(m: { name: string; repoId: string; kind: string; revision: string; architecture: string }): Promise<void> {
    await this.db.model.upsert({
      where: { name: m.name },
      create: { name: m.name, source: m.repoId, kind: m.kind, architecture: m.architecture, revision: m.revision, origin: "hub" },
      update: {},
    });
  }

  /** queued|active → active (again, when a new worker picks up a dead worker's install). False when already final. */
  async markActive(id: string): Promise<boolean> {
    const res = await this.db.install.updateMany({
      where: { id, status: { in: RUNNING } },
      data: { status: "active", attempts: { increment: 1 }, rateBps: null, etaSeconds: null },
    });
    if (res.count === 1) await this.db.install.updateMany({ where: { id, startedAt: null }, data: { startedAt: new Date() } });
    return res.count === 1;
  }

  /** A shutdown stopped it mid-way: queued again, for the next worker to resume. */
  async handBack(id: string): Promise<void> {
    await this.db.install.updateMany({ where: { id, status: "active" }, data: { status: "queued", rateBps: null, etaSeconds: null } });
  }

  async resolved(id: string, r: { commitSha: string; bytesTotal: number; filesTotal: number; bytesPresent: number }): Promise<void> {
    await this.db.install.updateMany({
      where: { id, status: "active" },
      data: {
        commitSha: r.commitSha,
        bytesTotal: BigInt(r.bytesTotal),
        filesTotal: r.filesTotal,
        bytesPresent: BigInt(r.bytesPresent),
        bytesDone: BigInt(r.bytesPresent),
      },
    });
  }

  async progress(
    id: string,
    p: { bytesDone: number; filesDone: number; rateBps: number | null; etaSeconds: number | null; file: string | null },
  ): Promise<void> {
    await this.db.install.updateMany({
      where: { id, status: "active" },
      data: { bytesDone: BigInt(p.bytesDone), filesDone: p.filesDone, rateBps: p.rateBps, etaSeconds: p.etaSeconds, currentFile: p.file },
    });
  }

  /** The install and the registry entry it is for, in one transaction: the entry switches to the pinned snapshot. */
  async complete(install: InstallRecord, o: InstallOutcome): Promise<boolean> {
    const [res] = await this.db.$transaction([
      this.db.install.updateMany({
        where: { id: install.id, status: { in: RUNNING } },
        data: {
          status: "completed",
          commitSha: o.commitSha,
          snapshotPath: o.snapshotPath,
          bytesDone: o.bytesTotal,
          bytesTotal: o.bytesTotal,
          filesDone: o.filesTotal,
          filesTotal: o.filesTotal,
          currentFile: null,
          etaSeconds: 0,
          finishedAt: new Date(),
        },
      }),
      this.db.model.upsert({
        where: { name: install.name },
        create: { name: install.name, ...this.entry(install, o) },
        update: this.entry(install, o),
      }),
    ]);
    return res.count === 1;
  }

  private entry(install: InstallRecord, o: InstallOutcome) {
    return {
      source: install.repoId,
      kind: install.kind,
      origin: "hub",
      revision: install.revision,
      commitSha: o.commitSha,
      snapshotPath: o.snapshotPath,
      weightName: o.weightName,
      variant: o.variant,
      architecture: o.facts.architecture,
      crossAttentionDim: o.facts.crossAttentionDim,
      sizeBytes: o.facts.sizeBytes,
      sha256: o.facts.sha256,
    };
  }

  async fail(id: string, code: string, message: string, hint: string | null): Promise<void> {
    await this.db.install.updateMany({
      where: { id, status: { in: RUNNING } },
      data: {
        status: "failed",
        errorCode: code,
        errorMessage: message.slice(0, 2000),
        errorHint: hint?.slice(0, 1000) ?? null,
        rateBps: null,
        etaSeconds: null,
        finishedAt: new Date(),
      },
    });
  }
}
