import type { Queue } from "bullmq";
import type { EngineStatusStore } from "../backends/engine-status";
import type { Config } from "../config";
import type { JobsService } from "../jobs/jobs.service";
import type { JobEventsHub } from "./job-events";
import type { ModelsService } from "../models/models.service";
import type { ConversionsService } from "../conversions/conversions.service";
import type { SubmitRateLimiter } from "./rate-limit";

/** What controllers may call. Built once by the service composition (src/service.ts). */
export interface ApiServices {
  config: Config;
  jobs: JobsService;
  models: ModelsService;
  conversions: ConversionsService;
  engines: EngineStatusStore;
  version: string;
  /** Live job updates (BullMQ QueueEvents) for the legacy routes and the WebSocket gateway. */
  events: JobEventsHub;
  /** Per-client budget for submissions (POST /jobs, POST /generate); absent: no limit. */
  rateLimiter?: SubmitRateLimiter;
  /** The BullMQ queues Bull Board shows at /admin/queues; absent: no board. */
  adminQueues?: Queue[];
}

let current: ApiServices | undefined;

export function setApiServices(services: ApiServices): void {
  current = services;
}

export function apiServices(): ApiServices {
  if (!current) throw new Error("API services are not set up");
  return current;
}

/** tsoa's IoC hook (tsoa.json iocModule): controllers receive the services in their constructor. */
export const iocContainer = {
  get<T>(controller: { prototype: T } & (new (services: ApiServices) => T)): T {
    return new controller(apiServices());
  },
};
