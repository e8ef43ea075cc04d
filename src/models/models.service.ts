import fs from "node:fs";
import path from "node:path";
import { AppError } from "../backends/error-codes";
import type { EngineName } from "../backends/engine-names";
import type { EngineStatusStore } from "../backends/engine-status";
import type { Logger } from "../infra/logger";
import { fileSha256 } from "./file-hash";
import { readMlxManifest } from "./mlx-manifest";
import type { MlxCheck, ModelFacts, ModelFiles } from "./model-files";
import { ModelRecord, ModelsRepository } from "./models.repository";
import type { ModelDetail, RegisterModelRequest } from "./models.dto";
import { loraMisfit, loraRefusedBy } from "./lora-fit";
import { inspectLora, tensorNamesOf } from "./safetensors-header";
import { MODEL_NAME_PATTERN, assertSafeName, assertTreeInside, resolveUnder } from "./safe-paths";
import { HubRef, formatHubRef, isHubReference, parseHubRef, registryNameFor } from "../installs/hub-id";

/** The 409 for a hub reference that is not installed, naming the call that installs it. */
export function notInstalledError(ref: HubRef, kind: "base" | "lora", field: string): AppError {
  const body = JSON.stringify({ source: formatHubRef(ref), kind, name: registryNameFor(ref.repoId) });
  return new AppError(
    "MODEL_NOT_INSTALLED",
    `${kind === "lora" ? "LoRA" : "model"} ${formatHubRef(ref)} is not installed: install it first with POST /models ${body} (admin), then follow GET /installs/{id}`,
    { field, source: formatHubRef(ref) },
  );
}



export interface ResolvedModel {
  name: string;
  architecture: "sd" | "sdxl";
  /** Absolute folder: a local model under models/, an installed hub snapshot, or a converted MLX folder. Never a hub id. */
  source: string;
  /** Hub models: the commit the installed snapshot is pinned to (the runner checks the folder says the same). */
  commit: string | null;
}

export interface ResolvedLora {
  name: string;
  /** Absolute path of the .safetensors file (under loras/ or inside an installed hub snapshot). Never a hub id. */
  source: string;
  strength: number;
  /** Hub LoRAs: the pinned commit of the snapshot. */
  commit: string | null;
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
    /** The engines' published probes: which LoRA files MLX refuses (`loraUnsupported`). */
    private readonly probes?: Pick<EngineStatusStore, "read">,
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
        try {
          assertTreeInside(this.modelsRoot, path.join(this.modelsRoot, name), "model folder");
        } catch (err) {
          this.logger.warn({ folder: name, err: (err as Error).message }, "skipping a model folder that links outside models/");
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
    assertTreeInside(root, full, kind === "base" ? "model folder" : "LoRA file");
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

  /** POST /models with a local source: a path under its root (checked, inspected). Hub ids go to src/installs. */
  async register(req: RegisterModelRequest): Promise<ModelDetail> {
    assertSafeName(req.name);
    if (isHubReference(req.source)) throw new AppError("INVALID_REQUEST", "a hub id is installed (POST /models answers 202), not registered as a path");
    await this.registerLocal(req.name, req.source, req.kind);
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

  /** Whether the MLX engine can fuse this LoRA file: yes unless its probe's loraUnsupported rules refuse it. */
  private async mlxAppliesLora(m: ModelRecord): Promise<boolean> {
    const rules = (await this.probes?.read("mlx").catch(() => null))?.loraUnsupported ?? [];
    if (!rules.length) return true;
    let file: string;
    try {
      file = this.sourcePath(m, this.lorasRoot);
    } catch {
      return true; // a hub LoRA not installed yet: judged when a job names it
    }
    return loraRefusedBy("mlx", m.name, tensorNamesOf(file), rules) === null;
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
    } else if (await this.mlxAppliesLora(m)) {
      detail.engines.push("mlx");
    }
    return detail;
  }

  /** Maps a registry name to what a runner loads; unknown names → MODEL_NOT_FOUND, unconverted MLX → MODEL_NOT_CONVERTED. */
  async resolve(reference: string, engine: EngineName): Promise<ResolvedModel> {
    const model = await this.findBase(reference);
    const name = model.name;
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
      return { name, architecture, source: dir, commit: model.commitSha };
    }
    return { name, architecture, source: this.sourcePath(model, this.modelsRoot), commit: model.commitSha };
  }

  /**
   * A base model reference as jobs and defaults give it: a registry name, or a hub id (`owner/name[@revision]`) that
   * names the entry its install created. A hub id is looked up in the registry only, never on disk; one that is not
   * installed yet is MODEL_NOT_INSTALLED (the caller decides whether to install it first: src/installs/hub-models.ts).
   */
  async findBase(reference: string): Promise<ModelRecord> {
    if (isHubReference(reference)) return this.findInstalledHub(parseHubRef(reference, null, "model"), "base", "model");
    assertSafeName(reference);
    const model = await this.repo.findByName(reference);
    if (!model || model.kind !== "base") {
      throw new AppError("MODEL_NOT_FOUND", `no base model named ${JSON.stringify(reference)}; see GET /models`);
    }
    return model;
  }

  /** The installed registry entry of a hub reference, or null (not installed, or its install still running). */
  async installedHub(ref: HubRef, kind: "base" | "lora"): Promise<ModelRecord | null> {
    const entry = await this.repo.findHub(ref.repoId, ref.revision, kind);
    return entry && entry.snapshotPath && entry.commitSha ? entry : null;
  }

  private async findInstalledHub(ref: HubRef, kind: "base" | "lora", field: string): Promise<ModelRecord> {
    const entry = await this.installedHub(ref, kind);
    if (!entry) throw notInstalledError(ref, kind, field);
    return entry;
  }

  /**
   * A LoRA for a job: registered (LORA_NOT_FOUND), and fitting the base model (lora-fit.ts) — an SD LoRA on SDXL
   * cannot load, so that is refused before queueing (INVALID_REQUEST).
   */
  async resolveLora(lora: { name: string; strength?: number }, baseReference: string): Promise<ResolvedLora> {
    let found: ModelRecord | null;
    if (isHubReference(lora.name)) {
      found = await this.findInstalledHub(parseHubRef(lora.name, null, "lora.name"), "lora", "lora.name");
    } else {
      assertSafeName(lora.name, "LoRA name");
      found = await this.repo.findByName(lora.name);
    }
    if (!found || found.kind !== "lora") throw new AppError("LORA_NOT_FOUND", `no LoRA named ${JSON.stringify(lora.name)}; see GET /models`);
    const base = await this.findBase(baseReference).catch(() => null);
    const misfit = base ? loraMisfit(found, base) : null;
    if (misfit) throw new AppError("INVALID_REQUEST", misfit, { field: "lora.name" });
    return { name: found.name, source: this.sourcePath(found, this.lorasRoot), strength: lora.strength ?? 1, commit: found.commitSha };
  }

  private sourcePath(model: ModelRecord, root: string): string {
    // A hub entry loads its pinned snapshot (src/installs) and nothing else: its `source` is a hub id, never a path.
    if (model.origin === "hub") {
      if (!model.snapshotPath || !model.commitSha) {
        throw notInstalledError({ repoId: model.source, revision: model.revision ?? "main" }, model.kind === "lora" ? "lora" : "base", "model");
      }
      return resolveUnder(this.modelsRoot, path.join(model.snapshotPath, model.weightName ?? ""), "hub snapshot");
    }
    return resolveUnder(root, model.source, "model path");
  }
}
