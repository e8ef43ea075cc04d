import type { Queue } from "bullmq";
import type { EngineStatusStore } from "../backends/engine-status";
import type { Config } from "../config";
import type { JobsService } from "../jobs/jobs.service";
import type { JobEventsHub } from "./job-events";
import type { ModelsService } from "../models/models.service";
import type { ConversionsService } from "../conversions/conversions.service";
import type { InstallsService } from "../installs/installs.service";
import type { SubmitRateLimiter } from "./rate-limit";
import type { SettingsService } from "../settings/settings.service";

/** What controllers may call. Built once by the service composition (src/service.ts). */
export interface ApiServices {
  config: Config;
  jobs: JobsService;
  models: ModelsService;
  conversions: ConversionsService;
  /** Hub installs (queued downloads); absent in compositions without them. */
  installs?: InstallsService;
  /** What workers last published about each engine. */
  engines: EngineStatusStore;
  /** The default engine and model: read them here, and change them only through it (it checks the pair can run). */
  settings: SettingsService;
  version: string;
  /** Live job updates (Redis pub/sub, final states read from the database) for SSE, the legacy routes and /ws. */
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
