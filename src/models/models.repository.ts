import type { Db } from "../infra/prisma";
import type { Model } from "../generated/prisma/client";

export type ModelRecord = Model;

export interface ModelInput {
  name: string;
  source: string;
  kind: "base" | "lora";
  architecture: "sd" | "sdxl";
  revision?: string | null;
  sizeBytes?: bigint | null;
  sha256?: string | null;
  crossAttentionDim?: number | null;
}

export class ModelsRepository {
  constructor(private readonly db: Db) {}

  findByName(name: string): Promise<ModelRecord | null> {
    return this.db.model.findUnique({ where: { name } });
  }

  /**
   * The registry entry of a hub reference: installed from `repoId` at `revision` (as asked, or the commit it pinned).
   * An installed entry wins over one whose install is still running.
   */
  async findHub(repoId: string, revision: string, kind: "base" | "lora"): Promise<ModelRecord | null> {
    const rows = await this.db.model.findMany({
      where: { origin: "hub", source: repoId, kind, OR: [{ revision }, { commitSha: revision }] },
      orderBy: { updatedAt: "desc" },
    });
    return rows.find((r) => r.snapshotPath !== null && r.commitSha !== null) ?? rows[0] ?? null;
  }

  list(kind?: "base" | "lora"): Promise<ModelRecord[]> {
    return this.db.model.findMany({ where: kind ? { kind } : {}, orderBy: { name: "asc" } });
  }

  upsert(input: ModelInput): Promise<ModelRecord> {
    const data = {
      source: input.source,
      kind: input.kind,
      architecture: input.architecture,
      revision: input.revision ?? null,
      sizeBytes: input.sizeBytes ?? null,
      sha256: input.sha256 ?? null,
      crossAttentionDim: input.crossAttentionDim ?? null,
    };
    return this.db.model.upsert({ where: { name: input.name }, create: { name: input.name, ...data }, update: data });
  }
}
