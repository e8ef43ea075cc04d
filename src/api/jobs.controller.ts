import { Readable } from "node:stream";
import type { Request as ExpressRequest } from "express";
import {
  Body,
  Controller,
  Delete,
  Get,
  Path,
  Post,
  Produces,
  Query,
  Request,
  Response,
  Route,
  Security,
  SuccessResponse,
  Tags,
} from "tsoa";
import { streamJobEvents } from "./job-event-stream";
import { submitterOfRequest } from "./submitter";
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
  @Response<ErrorBody>(400, "Invalid request, or larger than PIXELAI_MAX_PIXEL_STEPS (JOB_TOO_LARGE)")
  @Response<ErrorBody>(403, "A priority above the default without the admin key (PRIORITY_FORBIDDEN)")
  @Response<ErrorBody>(404, "Unknown model")
  @Response<ErrorBody>(409, "idempotencyKey already used with another body (IDEMPOTENCY_CONFLICT)")
  @Response<ErrorBody>(429, "Too many submissions (RATE_LIMITED) or jobs queued (TOO_MANY_QUEUED)")
  @Response<ErrorBody>(503, "Queue unavailable")
  async submit(@Body() body: GenerateJobRequest, @Request() req: ExpressRequest): Promise<SubmittedJob> {
    this.setStatus(202);
    return this.services.jobs.submit(body, "rest", submitterOfRequest(req, this.services.config.apiKey));
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

  /** The result PNG of a completed job (candidate 0 of a job with several: /jobs/{id}/images/{n} has each). */
  @Get("{id}/image")
  @Produces("image/png")
  @Response<ErrorBody>(404, "No such job or no image yet")
  async image(@Path() id: string): Promise<Readable> {
    return this.png(await this.services.jobs.image(id));
  }

  /**
   * Candidate `n` (0-based) of a completed job: `count` candidates were made, result.images lists them. Past the last
   * one: 404 NOT_FOUND.
   * @param n
   * @isInt n
   */
  @Get("{id}/images/{n}")
  @Produces("image/png")
  @Response<ErrorBody>(404, "No such job, no image yet, or no candidate n")
  async candidateImage(@Path() id: string, @Path() n: number): Promise<Readable> {
    return this.png(await this.services.jobs.image(id, n));
  }

  private png(png: Buffer): Readable {
    this.setHeader("Content-Type", "image/png");
    this.setHeader("Content-Length", String(png.length));
    this.setHeader("Cache-Control", "private, max-age=86400, immutable");
    return Readable.from(png);
  }

  /**
   * Server-Sent Events for one job: `install` {installs} while it waits queued for a hub model or LoRA to install (as
   * GET /installs/{id}, sent when their progress changes); `progress` {step, totalSteps} per step; with `preview=true`, `preview`
   * {step, width, height, pngBase64} on the steps the job makes previews for (submit it with `preview: true`; a job with
   * count > 1 adds `previews`, one {width, height, pngBase64} per candidate); then one
   * event named after the final state (`completed`, `failed` or `cancelled`) whose data is the job as GET /jobs/{id}
   * returns it, and the stream ends (close your EventSource then, or it reconnects). A finished job answers with its
   * final event at once. Comment lines (`: heartbeat`) keep the connection alive.
   * @param preview Also stream step previews (small approximate images, base64 PNG).
   */
  @Get("{id}/events")
  @Produces("text/event-stream")
  @SuccessResponse(200, "An event stream (text/event-stream)")
  @Response<ErrorBody>(404, "No such job")
  async events(@Path() id: string, @Request() req: ExpressRequest, @Query() preview?: boolean): Promise<void> {
    const view = await this.services.jobs.get(id); // unknown id: a JSON 404 before any stream starts
    const { events, config } = this.services;
    // The stream owns the response from here; tsoa leaves a response whose headers were sent alone.
    streamJobEvents(req.res!, events, view, {
      heartbeatMs: config.sseHeartbeatMs,
      previews: preview === true,
      reread: () => this.services.jobs.get(id),
    });
  }

  /**
   * Delete a finished job (completed, failed or cancelled): its record, image and queue entry. A queued or active job
   * answers 409 JOB_NOT_FINISHED (cancel it first). Needs the admin key when PIXELAI_API_KEY is set.
   */
  @Delete("{id}")
  @Security("apiKey")
  @SuccessResponse(204, "Deleted")
  @Response<ErrorBody>(401, "Admin key missing or wrong")
  @Response<ErrorBody>(404, "No such job")
  @Response<ErrorBody>(409, "Job not finished")
  async remove(@Path() id: string): Promise<void> {
    await this.services.jobs.delete(id);
    this.setStatus(204);
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
