import { PNG } from "pngjs";
import { AppError } from "../backends/error-codes";
import type { EngineProbe } from "../backends/engine-status";
import type { Logger } from "../infra/logger";
import type { ModelsService } from "../models/models.service";
import type { CancelBus } from "./cancel-bus";
import type { JobEventsChannel } from "./job-events-channel";
import type { JobQueue } from "./job-queue";
import type { JobsRepository } from "./jobs.repository";
import { JobsService } from "./jobs.service";

/** What JobsService decides about an img2img request before anything is stored: engine features, defaults, packing. */
function service(features: Record<string, boolean> | null): JobsService {
  const probe: EngineProbe | null = features && { engine: "torch", available: true, features, schedulers: ["euler"] };
  const engines = { defaultEngine: async () => "torch" as const, defaultModel: async () => "tiny-sd", read: async () => probe };
  const models = { resolve: async () => ({}) } as unknown as ModelsService;
  const unused = {} as never;
  return new JobsService(
    unused as JobsRepository,
    unused as JobQueue,
    unused as CancelBus,
    unused as Pick<JobEventsChannel, "liveProgress">,
    models,
    engines,
    unused as Logger,
  );
}

function png(width: number, height: number): string {
  const image = new PNG({ width, height });
  image.data.fill(255);
  return PNG.sync.write(image).toString("base64");
}

const request = { prompt: "a knight", width: 64, height: 64, inputImage: png(8, 8) };

async function refusal(promise: Promise<unknown>): Promise<AppError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  return err as AppError;
}

describe("JobsService.resolveImg2img", () => {
  it("keeps the init PNG then the mask PNG in one buffer, with the default strength", async () => {
    const { job, inputPng } = await service({ img2img: true, inpaint: true }).resolveImg2img({ ...request, mask: png(8, 8) });
    expect(job.img2img).toMatchObject({ width: 8, height: 8, strength: 0.75 });
    expect(inputPng.length).toBe(job.img2img!.bytes + job.img2img!.mask!.bytes);
    expect(inputPng.subarray(0, job.img2img!.bytes).equals(Buffer.from(request.inputImage, "base64"))).toBe(true);
  });

  it("an engine whose probe says inpaint false refuses a mask with 422 INPAINT_UNSUPPORTED, but runs img2img", async () => {
    const noInpaint = service({ img2img: true, inpaint: false });
    const err = await refusal(noInpaint.resolveImg2img({ ...request, mask: png(8, 8) }));
    expect([err.code, err.status, err.details?.field]).toEqual(["INPAINT_UNSUPPORTED", 422, "mask"]);
    expect((await noInpaint.resolveImg2img({ ...request, strength: 0.4 })).job.img2img?.strength).toBe(0.4);
  });

  it("an engine whose probe says img2img false refuses with 422 IMG2IMG_UNSUPPORTED; no probe yet queues anyway", async () => {
    const err = await refusal(service({ img2img: false, inpaint: false }).resolveImg2img(request));
    expect([err.code, err.status]).toEqual(["IMG2IMG_UNSUPPORTED", 422]);
    expect((await service(null).resolveImg2img({ ...request, mask: png(8, 8) })).job.img2img?.mask).not.toBeNull();
  });
});
