import { Body, Controller, Get, Put, Response, Route, Security, Tags } from "tsoa";
import type { EngineName } from "../backends/engine-names";
import { enginesSummary, EnginesSummary } from "./engines-summary";
import type { ErrorBody } from "./error-handler";
import type { ApiServices } from "./services";

export interface DefaultEngineRequest {
  engine: EngineName;
}

@Route("engines")
@Tags("Engines")
export class EnginesController extends Controller {
  constructor(private readonly services: ApiServices) {
    super();
  }

  /** Capability matrix from each runner's probe (refreshed by workers, and at once when a runner restarts). */
  @Get()
  async list(): Promise<EnginesSummary> {
    return enginesSummary(this.services.engines, this.services.settings, this.services.models);
  }

  /**
   * The engine for requests that name none (shared by every API process). Only an engine a worker runs now and that
   * can run the default model is accepted.
   */
  @Put("default")
  @Security("apiKey")
  @Response<ErrorBody>(401, "Admin key missing or wrong")
  @Response<ErrorBody>(404, "The default model is no longer registered")
  @Response<ErrorBody>(409, "The default model has no conversion for this engine (MODEL_NOT_CONVERTED)")
  @Response<ErrorBody>(503, "No worker runs this engine (ENGINE_UNAVAILABLE)")
  async setDefault(@Body() body: DefaultEngineRequest): Promise<{ default: EngineName }> {
    const { engine } = await this.services.settings.setDefaultEngine(body.engine);
    return { default: engine };
  }
}
