import type { Db } from "../infra/prisma";
import type { MlxConversion, MlxConversionFile, Model } from "../generated/prisma/client";
import type { ConversionOptions } from "./conversions.dto";

export type ConversionRecord = MlxConversion & { model: Model; files?: MlxConversionFile[] };

const TERMINAL = ["completed", "failed"];

export class ConversionsRepository {
  constructor(private readonly db: Db) {}

  create(id: string, modelId: string, options: ConversionOptions, sourceFingerprint: string): Promise<ConversionRecord> {
    return this.db.mlxConversion.create({
      data: { id, modelId, ...columns(options), status: "queued", sourceFingerprint },
      include: { model: true },
    });
  }

  find(id: string): Promise<ConversionRecord | null> {
    return this.db.mlxConversion.findUnique({ where: { id }, include: { model: true, files: true } });
  }

  /** A finished conversion of the same source state and dtype, or one still on its way (no duplicate work). */
  findReusable(modelId: string, options: ConversionOptions, sourceFingerprint: string): Promise<ConversionRecord | null> {
    return this.db.mlxConversion.findFirst({
      where: { modelId, ...columns(options), sourceFingerprint, status: { in: ["queued", "active", "completed"] } },
      orderBy: { createdAt: "desc" },
      include: { model: true },
    });
  }

  latestCompletedPerModel(): Promise<ConversionRecord[]> {
    return this.db.mlxConversion.findMany({
      where: { status: "completed" },
      orderBy: { createdAt: "desc" },
      distinct: ["modelId"],
      include: { model: true, files: true },
    });
  }

  async markActive(id: string): Promise<boolean> {
    const res = await this.db.mlxConversion.updateMany({ where: { id, status: { notIn: TERMINAL } }, data: { status: "active" } });
    return res.count === 1;
  }

  async progress(id: string, percent: number): Promise<void> {
    await this.db.mlxConversion.updateMany({ where: { id, status: "active" }, data: { progress: percent } });
  }

  async complete(
    id: string,
    r: {
      path: string;
      manifest: string;
      sourceRevision: string;
      converterVersion: string;
      files: Array<{ path: string; sha256: string; size: number }>;
    },
  ): Promise<void> {
    await this.db.$transaction([
      this.db.mlxConversionFile.deleteMany({ where: { conversionId: id } }),
      this.db.mlxConversionFile.createMany({
        data: r.files.map((f) => ({ conversionId: id, path: f.path, sha256: f.sha256, sizeBytes: BigInt(f.size) })),
      }),
      this.db.mlxConversion.update({
        where: { id },
        data: {
          status: "completed",
          progress: 100,
          path: r.path,
          manifest: r.manifest,
          sourceRevision: r.sourceRevision,
          converterVersion: r.converterVersion,
          finishedAt: new Date(),
        },
      }),
    ]);
  }

  async fail(id: string, code: string, message: string): Promise<void> {
    await this.db.mlxConversion.updateMany({
      where: { id, status: { notIn: TERMINAL } },
      data: { status: "failed", errorCode: code, errorMessage: message.slice(0, 2000), finishedAt: new Date() },
    });
  }
}

function columns(options: ConversionOptions): { dtype: string; quantizeBits: number | null; quantizeGroupSize: number | null } {
  return { dtype: options.dtype, quantizeBits: options.quantize?.bits ?? null, quantizeGroupSize: options.quantize?.groupSize ?? null };
}

/** A row's quantization as the API shows it. */
export function quantizeOf(r: { quantizeBits: number | null; quantizeGroupSize: number | null }): ConversionOptions["quantize"] {
  return r.quantizeBits === null
    ? null
    : ({ bits: r.quantizeBits, groupSize: r.quantizeGroupSize ?? 64 } as NonNullable<ConversionOptions["quantize"]>);
}
