import { Db, sqlExecutorOf } from "../infra/prisma";
import { dateOf, SqlExecutor } from "../infra/sql-executor";
import { Prisma } from "../generated/prisma/client";
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
  private readonly sql: SqlExecutor;

  constructor(private readonly db: Db) {
    this.sql = sqlExecutorOf(db);
  }

  /**
   * Every job looks its model up twice (API and worker), so this read is a raw statement: Prisma's model API compiles a
   * plan on every call (src/infra/sql-executor.ts says what that costs). It returns what findUnique would.
   */
  async findByName(name: string): Promise<ModelRecord | null> {
    const rows = await this.sql.all<Record<string, unknown>>(Prisma.sql`SELECT * FROM "Model" WHERE "name" = ${name}`);
    return rows[0] ? modelRow(rows[0]) : null;
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

/** A Model row as the SQL executor returns it, typed as Prisma's client types it (dates, the BigInt size). */
function modelRow(row: Record<string, unknown>): ModelRecord {
  const sizeBytes = row.sizeBytes;
  return {
    ...(row as unknown as ModelRecord),
    sizeBytes: sizeBytes === null || sizeBytes === undefined ? null : BigInt(sizeBytes as number | bigint | string),
    createdAt: dateOf(row.createdAt),
    updatedAt: dateOf(row.updatedAt),
  };
}
