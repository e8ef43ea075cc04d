import { Body, Controller, Get, Put, Response, Route, Security, Tags } from "tsoa";
import { enginesSummary, EnginesSummary } from "./engines-summary";
import type { ErrorBody } from "./error-handler";
import type { ApiServices } from "./services";
import type { EngineName } from "../jobs/jobs.dto";

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
    return enginesSummary(this.services.engines, this.services.models);
  }

  /** The engine for requests that name none (shared by every API process). */
  @Put("default")
  @Security("apiKey")
  @Response<ErrorBody>(401, "Admin key missing or wrong")
  async setDefault(@Body() body: DefaultEngineRequest): Promise<{ default: EngineName }> {
    await this.services.engines.setDefaultEngine(body.engine);
    return { default: body.engine };
  }
}
