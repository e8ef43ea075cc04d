import { Controller, Get, Path, Response, Route, Tags } from "tsoa";
import { AppError } from "../backends/error-codes";
import type { ErrorBody } from "./error-handler";
import type { ApiServices } from "./services";

export interface ModelView {
  name: string;
  kind: "base" | "lora";
  architecture: "sd" | "sdxl";
  source: string;
  sizeBytes: number | null;
}

export interface ModelList {
  /** Names only: the seed server's shape, kept for its Aseprite extension. */
  models: string[];
  items: ModelView[];
}

@Route("models")
@Tags("Models")
export class ModelsController extends Controller {
  constructor(private readonly services: ApiServices) {
    super();
  }

  @Get()
  async list(): Promise<ModelList> {
    const rows = await this.services.models.list();
    const items = rows.map(toModelView);
    return { models: items.filter((m) => m.kind === "base").map((m) => m.name), items };
  }

  @Get("{name}")
  @Response<ErrorBody>(404, "No such model")
  async get(@Path() name: string): Promise<ModelView> {
    const row = (await this.services.models.list()).find((m) => m.name === name);
    if (!row) throw new AppError("MODEL_NOT_FOUND", `no model named ${JSON.stringify(name)}`);
    return toModelView(row);
  }
}

function toModelView(m: { name: string; kind: string; architecture: string; source: string; sizeBytes: bigint | null }): ModelView {
  return {
    name: m.name,
    kind: m.kind === "lora" ? "lora" : "base",
    architecture: m.architecture === "sdxl" ? "sdxl" : "sd",
    source: m.source,
    sizeBytes: m.sizeBytes === null ? null : Number(m.sizeBytes),
  };
}
