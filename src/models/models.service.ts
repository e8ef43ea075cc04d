import fs from "node:fs";
import path from "node:path";
import { AppError } from "../backends/error-codes";
import type { EngineName } from "../jobs/jobs.dto";
import type { Logger } from "../infra/logger";
import { ModelRecord, ModelsRepository } from "./models.repository";
import { HUB_ID_PATTERN, MODEL_NAME_PATTERN, assertSafeName, resolveUnder } from "./safe-paths";

export interface ResolvedModel {
  name: string;
  architecture: "sd" | "sdxl";
  /** Absolute folder for local models, or a hub id. */
  source: string;
}

/** Reads `_class_name` of a diffusers folder: SDXL pipelines carry "XL" in their class name. */
export function architectureOf(modelDir: string): "sd" | "sdxl" | null {
  const indexFile = path.join(modelDir, "model_index.json");
  if (!fs.existsSync(indexFile)) return null;
  const index = JSON.parse(fs.readFileSync(indexFile, "utf8")) as { _class_name?: string };
  return /XL/.test(index._class_name ?? "") ? "sdxl" : "sd";
}

function folderSize(dir: string): bigint {
  let total = 0n;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) total += folderSize(p);
    else if (entry.isFile()) total += BigInt(fs.statSync(p).size);
  }
  return total;
}

export class ModelsService {
  constructor(
    private readonly repo: ModelsRepository,
    private readonly modelsRoot: string,
    private readonly logger: Logger,
  ) {}

  /** Registers every diffusers folder found directly under the models root (start-up). */
  async scanLocal(): Promise<string[]> {
    if (!fs.existsSync(this.modelsRoot)) return [];
    const found: string[] = [];
    for (const entry of fs.readdirSync(this.modelsRoot, { withFileTypes: true })) {
      if (!entry.isDirectory() || !MODEL_NAME_PATTERN.test(entry.name) || entry.name === "mlx") continue;
      const dir = path.join(this.modelsRoot, entry.name);
      const architecture = architectureOf(dir);
      if (!architecture) continue;
      await this.repo.upsert({ name: entry.name, source: entry.name, kind: "base", architecture, sizeBytes: folderSize(dir) });
      found.push(entry.name);
    }
    this.logger.info({ models: found }, "registered local models");
    return found;
  }

  list(): Promise<ModelRecord[]> {
    return this.repo.list();
  }

  /** Maps a registry name to what a runner loads; unknown names → MODEL_NOT_FOUND, unconverted MLX → MODEL_NOT_CONVERTED. */
  async resolve(name: string, engine: EngineName): Promise<ResolvedModel> {
    assertSafeName(name);
    const model = await this.repo.findByName(name);
    if (!model || model.kind !== "base") {
      throw new AppError("MODEL_NOT_FOUND", `no base model named ${JSON.stringify(name)}; see GET /models`);
    }
    const architecture = model.architecture === "sdxl" ? "sdxl" : "sd";
    if (engine === "mlx") {
      const dir = resolveUnder(path.join(this.modelsRoot, "mlx"), name, "MLX model");
      if (!fs.existsSync(path.join(dir, "manifest.json"))) {
        throw new AppError(
          "MODEL_NOT_CONVERTED",
          `model ${name} has no MLX conversion: POST /models/${name}/conversions, or run python scripts/convert_to_mlx.py ${model.source} --name ${name}`,
        );
      }
      return { name, architecture, source: dir };
    }
    if (HUB_ID_PATTERN.test(model.source) && !fs.existsSync(path.join(this.modelsRoot, model.source))) {
      return { name, architecture, source: model.source };
    }
    return { name, architecture, source: resolveUnder(this.modelsRoot, model.source, "model path") };
  }
}
