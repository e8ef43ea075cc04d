import { Controller, Get, Path, Query, Response, Route, Tags } from "tsoa";
import { AppError } from "../backends/error-codes";
import type { InstallView } from "../installs/installs.dto";
import type { ErrorBody } from "./error-handler";
import type { ApiServices } from "./services";

@Route("installs")
@Tags("Models")
export class InstallsController extends Controller {
  constructor(private readonly services: ApiServices) {
    super();
  }

  /**
   * Hub installs, newest first (POST /models with a hub id starts one).
   * @param limit
   * @isInt limit
   * @minimum limit 1
   * @maximum limit 200
   */
  @Get()
  async list(@Query() limit?: number): Promise<InstallView[]> {
    return (await this.services.installs?.list(limit ?? 50)) ?? [];
  }

  /** An install's status and progress: bytes done/total, files, rate, ETA; the pinned commit; an error with a hint. */
  @Get("{id}")
  @Response<ErrorBody>(404, "No such install")
  async get(@Path() id: string): Promise<InstallView> {
    // A composition without installs has none to show.
    if (!this.services.installs) throw new AppError("NOT_FOUND", `no install ${JSON.stringify(id).slice(0, 80)}`);
    return this.services.installs.get(id);
  }
}
