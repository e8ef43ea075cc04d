import fs from "node:fs";
import path from "node:path";
import { AppError } from "../backends/error-codes";
import type { EngineName } from "../backends/engine-names";
import type { Logger } from "../infra/logger";
import { fileSha256 } from "./file-hash";
import { readMlxManifest } from "./mlx-manifest";
import type { MlxCheck, ModelFacts, ModelFiles } from "./model-files";
import { ModelRecord, ModelsRepository } from "./models.repository";
import type { ModelDetail, RegisterModelRequest } from "./models.dto";
import { loraMisfit } from "./lora-fit";
import { inspectLora } from "./safetensors-header";
import { HUB_ID_PATTERN, MODEL_NAME_PATTERN, assertSafeName, resolveUnder } from "./safe-paths";

export interface ResolvedModel {
  name: string;
  architecture: "sd" | "sdxl";
  /** Absolute folder for local models, or a hub id. */
  source: string;
}

export interface ResolvedLora {
  name: string;
  /** Absolute path of the .safetensors file, or a hub id. */
  source: string;
  strength: number;
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

/**
 * The model registry: base models and LoRAs, local (under their root) or hub ids, and where each can run. What a
 * model folder is and whether a conversion is intact are the Python side's answers (model-files.ts); what a LoRA is
 * and whether it fits are read here (safetensors-header.ts, lora-fit.ts).
 */
export class ModelsService {
  constructor(
    private readonly repo: ModelsRepository,
    readonly modelsRoot: string,
    readonly lorasRoot: string,
    private readonly files: ModelFiles,
    private readonly logger: Logger,
  ) {}

  get mlxRoot(): string {
    return path.join(this.modelsRoot, "mlx");
  }

  /** Registers every diffusers folder under models/ and every .safetensors under loras/ (start-up). */
  async scanLocal(): Promise<string[]> {
    const found: string[] = [];
    if (fs.existsSync(this.modelsRoot)) {
      const names = fs
        .readdirSync(this.modelsRoot, { withFileTypes: true })
        .filter((entry) => entry.isDirectory() && MODEL_NAME_PATTERN.test(entry.name) && entry.name !== "mlx")
        .map((entry) => entry.name);
      // one question for every folder: a Python start per folder would slow start-up down with many models
      const answers = await this.files.inspect(names.map((name) => path.join(this.modelsRoot, name)));
      for (const name of names) {
        const facts = answers.get(path.join(this.modelsRoot, name));
        if (!facts || "error" in facts) {
          if (fs.existsSync(path.join(this.modelsRoot, name, "model_index.json"))) {
            this.logger.warn({ folder: name, err: facts?.error }, "skipping a model folder this server cannot run");
          }
          continue;
        }
        await this.upsertBase(name, name, path.join(this.modelsRoot, name), facts);
        found.push(name);
      }
    }
    if (fs.existsSync(this.lorasRoot)) {
      for (const entry of fs.readdirSync(this.lorasRoot, { withFileTypes: true })) {
        const name = entry.name.replace(/\.safetensors$/, "");
        if (!entry.isFile() || name === entry.name || !MODEL_NAME_PATTERN.test(name)) continue;
        try {
          await this.registerLocal(name, entry.name, "lora");
          found.push(name);
        } catch (err) {
          this.logger.warn({ file: entry.name, err: (err as Error).message }, "skipping unreadable LoRA");
        }
      }
    }
    this.logger.info({ models: found }, "registered local models");
    return found;
  }

  private async registerLocal(name: string, relative: string, kind: "base" | "lora"): Promise<ModelRecord> {
    const root = kind === "base" ? this.modelsRoot : this.lorasRoot;
    const full = resolveUnder(root, relative, "model path");
    if (!fs.existsSync(full)) throw new AppError("INVALID_REQUEST", `${relative} does not exist under ${kind === "base" ? "models/" : "loras/"}`);
    if (kind === "base") {
      const facts = (await this.files.inspect([full])).get(full);
      if (!facts || "error" in facts) {
        throw new AppError("INVALID_REQUEST", `${relative} cannot be registered: ${facts?.error ?? "not a model folder"}`);
      }
      return this.upsertBase(name, relative, full, facts);
    }
    if (!fs.statSync(full).isFile() || !full.endsWith(".safetensors")) {
      throw new AppError("INVALID_REQUEST", `a LoRA must be a .safetensors file under loras/`);
    }
    let info;
    try {
      info = inspectLora(full);
    } catch (err) {
      throw new AppError("INVALID_REQUEST", `${relative} is not a readable safetensors LoRA: ${(err as Error).message}`);
    }
    return this.repo.upsert({
      name,
      source: relative,
      kind,
      architecture: info.architecture,
      sizeBytes: BigInt(fs.statSync(full).size),
      sha256: fileSha256(full),
      crossAttentionDim: info.crossAttentionDim,
    });
  }

  private upsertBase(name: string, relative: string, full: string, facts: ModelFacts): Promise<ModelRecord> {
    return this.repo.upsert({
      name,
      source: relative,
      kind: "base",
      architecture: facts.architecture,
      sizeBytes: folderSize(full),
      crossAttentionDim: facts.crossAttentionDim,
    });
  }

  /** POST /models: a local path under its root (checked, inspected) or a hub id (architecture as given). */
  async register(req: RegisterModelRequest): Promise<ModelDetail> {
    assertSafeName(req.name);
    const root = req.kind === "base" ? this.modelsRoot : this.lorasRoot;
    const local = !HUB_ID_PATTERN.test(req.source) || fs.existsSync(resolveUnder(root, req.source, "source"));
    if (local) {
      await this.registerLocal(req.name, req.source, req.kind);
    } else {
      await this.repo.upsert({ name: req.name, source: req.source, kind: req.kind, architecture: req.architecture ?? "sd", revision: req.revision ?? null });
    }
    this.logger.info({ name: req.name, kind: req.kind, source: req.source }, "model registered");
    return this.describe(req.name);
  }

  list(): Promise<ModelRecord[]> {
    return this.repo.list();
  }

  async find(name: string): Promise<ModelRecord> {
    if (!MODEL_NAME_PATTERN.test(name) || name.includes("..")) throw new AppError("MODEL_NOT_FOUND", `no model named ${JSON.stringify(name)}`);
    const model = await this.repo.findByName(name);
    if (!model) throw new AppError("MODEL_NOT_FOUND", `no model named ${JSON.stringify(name)}; see GET /models`);
    return model;
  }

  /** Details, including the engines a model can run on: MLX only when converted and the manifest verifies. */
  async describe(name: string): Promise<ModelDetail> {
    return this.detail(await this.find(name));
  }

  /** A converted MLX folder checked against its manifest (the MLX engine's own check; unchanged files are not re-hashed). */
  mlxCheck(name: string): Promise<MlxCheck> {
    return this.files.verifyMlx(resolveUnder(this.mlxRoot, name, "MLX model"));
  }

  async detail(m: ModelRecord): Promise<ModelDetail> {
    const kind = m.kind === "lora" ? "lora" : "base";
    const detail: ModelDetail = {
      name: m.name,
      kind,
      architecture: m.architecture === "sdxl" ? "sdxl" : "sd",
      source: m.source,
      sizeBytes: m.sizeBytes === null ? null : Number(m.sizeBytes),
      sha256: m.sha256,
      crossAttentionDim: m.crossAttentionDim,
      engines: ["torch"],
      origin: m.origin === "hub" ? "hub" : "local",
      commit: m.commitSha,
    };
    if (kind === "base") {
      const check = await this.mlxCheck(m.name);
      const manifest = check.converted ? readMlxManifest(path.join(this.mlxRoot, m.name)) : null;
      detail.mlx = {
        converted: check.converted,
        verified: check.verified,
        ...(check.problem ? { problem: check.problem } : {}),
        ...(manifest
          ? {
              dtype: manifest.dtype,
              sourceRevision: manifest.sourceRevision,
              converterVersion: manifest.converterVersion,
              files: Object.fromEntries(Object.entries(manifest.files ?? {}).map(([k, v]) => [k, v.sha256])),
            }
          : {}),
      };
      if (check.verified) detail.engines.push("mlx");
    }
    return detail;
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
      const dir = resolveUnder(this.mlxRoot, name, "MLX model");
      if (!fs.existsSync(path.join(dir, "manifest.json"))) {
        throw new AppError(
          "MODEL_NOT_CONVERTED",
          `model ${name} has no MLX conversion: POST /models/${name}/conversions, or run python scripts/convert_to_mlx.py models/${model.source} --name ${name}`,
          { model: name },
        );
      }
      return { name, architecture, source: dir };
    }
    return { name, architecture, source: this.sourcePath(model, this.modelsRoot) };
  }

  /**
   * A LoRA for a job: registered (LORA_NOT_FOUND), and fitting the base model (lora-fit.ts) — an SD LoRA on SDXL
   * cannot load, so that is refused before queueing (INVALID_REQUEST).
   */
  async resolveLora(lora: { name: string; strength?: number }, baseName: string): Promise<ResolvedLora> {
    assertSafeName(lora.name, "LoRA name");
    const found = await this.repo.findByName(lora.name);
    if (!found || found.kind !== "lora") throw new AppError("LORA_NOT_FOUND", `no LoRA named ${JSON.stringify(lora.name)}; see GET /models`);
    const base = await this.repo.findByName(baseName);
    const misfit = base ? loraMisfit(found, base) : null;
    if (misfit) throw new AppError("INVALID_REQUEST", misfit, { field: "lora.name" });
    return { name: found.name, source: this.sourcePath(found, this.lorasRoot), strength: lora.strength ?? 1 };
  }

  private sourcePath(model: ModelRecord, root: string): string {
    // An installed hub model loads its pinned snapshot (src/installs), never the hub id.
    if (model.origin === "hub" && model.snapshotPath) {
      return resolveUnder(this.modelsRoot, path.join(model.snapshotPath, model.weightName ?? ""), "hub snapshot");
    }
    if (HUB_ID_PATTERN.test(model.source) && !fs.existsSync(path.join(root, model.source))) return model.source;
    return resolveUnder(root, model.source, "model path");
  }
}
