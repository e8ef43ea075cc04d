import { Body, Controller, Get, Path, Post, Put, Response, Route, Security, SuccessResponse, Tags } from "tsoa";
import type { ErrorBody } from "./error-handler";
import type { ApiServices } from "./services";
import type { ModelDetail, RegisterModelRequest } from "../models/models.dto";
import type { InstallView } from "../installs/installs.dto";
import { isHubReference, parseHubRef } from "../installs/hub-id";
import { AppError } from "../backends/error-codes";
import type { ConversionRequest, ConversionView, MlxModelSummary } from "../conversions/conversions.dto";

export interface DefaultModelRequest {
  /**
   * A registry name, or a hub id `owner/name` (optionally `@revision`; checked with the hub's rules, 400 when bad).
   * @minLength 1
   * @maxLength 300
   */
  model: string;
}

export interface DefaultModelAnswer {
  default: string;
  /** A hub id not installed yet: the install it started or joined (jobs naming no model wait for it). */
  install?: InstallView;
}

export interface ModelList {
  /** Base model names only: the seed server's shape, kept for its Aseprite extension. */
  models: string[];
  items: ModelDetail[];
}

@Route("models")
@Tags("Models")
export class ModelsController extends Controller {
  constructor(private readonly services: ApiServices) {
    super();
  }

  /** Registered base models and LoRAs, with the engines each can run on now. */
  @Get()
  async list(): Promise<ModelList> {
    const rows = await this.services.models.list();
    const items = await Promise.all(rows.map((m) => this.services.models.detail(m)));
    return { models: items.filter((m) => m.kind === "base").map((m) => m.name), items };
  }

  /**
   * Register a base model or LoRA: a path under models/ or loras/ (201), or a hub id `owner/name` — which starts its
   * install (202; an identical install still running answers 200), followed at GET /installs/{id} and GET /models/{name}.
   */
  @Post()
  @Security("apiKey")
  @SuccessResponse(201, "Registered")
  @Response<InstallView>(202, "Hub id: install queued")
  @Response<ErrorBody>(400, "Bad name, path or hub id")
  @Response<ErrorBody>(401, "Admin key missing or wrong")
  async register(@Body() body: RegisterModelRequest): Promise<ModelDetail | InstallView> {
    if (isHubReference(body.source)) {
      parseHubRef(body.source, body.revision); // bad input is a 400 before anything else
      // A hub id is only ever installed, never stored for a runner to try as a path or fetch mid-generation.
      if (!this.services.installs) throw new AppError("ENGINE_UNAVAILABLE", "hub installs are not available in this process");
      const { view, created } = await this.services.installs.requestRegistration(body);
      this.setStatus(created ? 202 : 200);
      return view;
    }
    this.setStatus(201);
    return this.services.models.register(body);
  }

  /**
   * The base model for requests that name none (shared by every API process; the seed's /load_model sets it too). Only
   * a model the default engine can run is accepted.
   */
  @Put("default")
  @Security("apiKey")
  @Response<ErrorBody>(401, "Admin key missing or wrong")
  @Response<ErrorBody>(404, "No such base model")
  @Response<ErrorBody>(400, "Bad hub id")
  @Response<ErrorBody>(
    409,
    "The default engine cannot run it: no conversion (MODEL_NOT_CONVERTED); a hub id not installed while PIXELAI_AUTO_INSTALL_MODELS=0 (MODEL_NOT_INSTALLED)",
  )
  async setDefault(@Body() body: DefaultModelRequest): Promise<DefaultModelAnswer> {
    const { model, install } = await this.services.settings.setDefaultModel(body.model);
    return install ? { default: model, install } : { default: model };
  }

  @Get("{name}")
  @Response<ErrorBody>(404, "No such model")
  async get(@Path() name: string): Promise<ModelDetail> {
    const detail = await this.services.models.describe(name);
    const install = await this.services.installs?.latestForName(detail.name);
    return install ? { ...detail, install } : detail;
  }

  /** Queue a diffusers → MLX conversion; an unchanged source answers 200 with the earlier conversion. */
  @Post("{name}/conversions")
  @Security("apiKey")
  @SuccessResponse(202, "Queued")
  @Response<ConversionView>(200, "Unchanged source: the existing conversion")
  @Response<ErrorBody>(401, "Admin key missing or wrong")
  @Response<ErrorBody>(404, "No such model")
  async convert(@Path() name: string, @Body() body?: ConversionRequest): Promise<ConversionView> {
    const quantize = body?.quantize ? { bits: body.quantize, groupSize: body.groupSize ?? 64 } : null;
    if (!quantize && body?.groupSize !== undefined) throw new AppError("INVALID_REQUEST", "groupSize needs quantize (4 or 8)");
    const { view, created } = await this.services.conversions.request(name, { dtype: body?.dtype ?? "float16", quantize });
    this.setStatus(created ? 202 : 200);
    return view;
  }
}

@Route("conversions")
@Tags("Models")
export class ConversionsController extends Controller {
  constructor(private readonly services: ApiServices) {
    super();
  }

  /** Status, progress (0–100) and, when done, the manifest with per-file sha256. */
  @Get("{id}")
  @Response<ErrorBody>(404, "No such conversion")
  async get(@Path() id: string): Promise<ConversionView> {
    return this.services.conversions.get(id);
  }
}

@Route("mlx_models")
@Tags("Models")
export class MlxModelsController extends Controller {
  constructor(private readonly services: ApiServices) {
    super();
  }

  /** Converted MLX models (latest conversion of each) with a manifest summary and whether the files still verify. */
  @Get()
  async list(): Promise<MlxModelSummary[]> {
    return this.services.conversions.listMlx();
  }
}
