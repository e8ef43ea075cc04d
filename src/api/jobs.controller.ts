import { Readable } from "node:stream";
import { Body, Controller, Get, Path, Post, Produces, Query, Response, Route, SuccessResponse, Tags } from "tsoa";
import type { ErrorBody } from "./error-handler";
import type { ApiServices } from "./services";
import type { EngineName, GenerateJobRequest, JobPage, JobStatus, JobView, SubmittedJob } from "../jobs/jobs.dto";

@Route("jobs")
@Tags("Jobs")
export class JobsController extends Controller {
  constructor(private readonly services: ApiServices) {
    super();
  }

  /** Queue a generation. Answers at once; poll GET /jobs/{id} or stream /ws. */
  @Post()
  @SuccessResponse(202, "Queued")
  @Response<ErrorBody>(400, "Invalid request")
  @Response<ErrorBody>(404, "Unknown model")
  @Response<ErrorBody>(503, "Queue unavailable")
  async submit(@Body() body: GenerateJobRequest): Promise<SubmittedJob> {
    this.setStatus(202);
    return this.services.jobs.submit(body);
  }

  /**
   * Job history, newest first.
   * @param limit
   * @isInt limit
   * @minimum limit 1
   * @maximum limit 100
   */
  @Get()
  async list(
    @Query() status?: JobStatus,
    @Query() engine?: EngineName,
    @Query() limit?: number,
    @Query() cursor?: string,
  ): Promise<JobPage> {
    return this.services.jobs.list({ status, engine, limit, cursor });
  }

  /** Status, progress, timings and (when completed) where the image is. */
  @Get("{id}")
  @Response<ErrorBody>(404, "No such job")
  async get(@Path() id: string): Promise<JobView> {
    return this.services.jobs.get(id);
  }

  /** The result PNG of a completed job. */
  @Get("{id}/image")
  @Produces("image/png")
  @Response<ErrorBody>(404, "No such job or no image yet")
  async image(@Path() id: string): Promise<Readable> {
    const png = await this.services.jobs.image(id);
    this.setHeader("Content-Type", "image/png");
    this.setHeader("Content-Length", String(png.length));
    this.setHeader("Cache-Control", "private, max-age=86400, immutable");
    return Readable.from(png);
  }

  /** Cancel a queued job (removed at once) or a running one (stops between steps). */
  @Post("{id}/cancel")
  @SuccessResponse(202, "Cancellation requested")
  @Response<ErrorBody>(404, "No such job")
  @Response<ErrorBody>(409, "Already finished")
  async cancel(@Path() id: string): Promise<JobView> {
    this.setStatus(202);
    return this.services.jobs.cancel(id);
  }
}
