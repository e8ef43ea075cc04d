import { createHash } from "node:crypto";
import { AppError } from "../backends/error-codes";
import type { GenerateJobRequest } from "./jobs.dto";

/**
 * Who submits a job, as the API tells it (src/api/submitter.ts). `client` scopes idempotency keys and the queued cap;
 * `admin`: the request carried the configured admin key.
 */
export interface Submitter {
  client: string;
  admin: boolean;
}

/** In-process callers (tests, the bench) that are not a remote client. */
export const LOCAL_SUBMITTER: Submitter = { client: "local", admin: false };

/**
 * The priority of a job that names none, and the only one anyone may ask for: the lowest a request may name. Jobs at
 * it run in submission order; a higher one (a smaller number) jumps the queue, so it takes the admin key.
 */
export const DEFAULT_PRIORITY = 1000;

export interface FairUseLimits {
  /** Jobs one client may have queued or running at once; 0: no cap. */
  maxQueuedPerClient: number;
  /** Largest width × height × steps of one job; 0: no bound. */
  maxPixelSteps: number;
}

export const NO_LIMITS: FairUseLimits = { maxQueuedPerClient: 0, maxPixelSteps: 0 };

export function checkPriority(priority: number | undefined, submitter: Submitter): void {
  if (priority === undefined || priority >= DEFAULT_PRIORITY || submitter.admin) return;
  throw new AppError(
    "PRIORITY_FORBIDDEN",
    `priority ${priority} is above the default (${DEFAULT_PRIORITY}); only requests with the admin key (X-API-Key, set by PIXELAI_API_KEY) may jump the queue`,
    { field: "priority", defaultPriority: DEFAULT_PRIORITY },
  );
}

/**
 * A job's cost in the unit the GPU pays for: pixels per step, times steps, times candidates (a batch of `count` costs
 * about `count` single jobs of compute, whatever it saves on overhead).
 */
export function checkJobSize(job: { width: number; height: number; steps: number; count?: number }, limits: FairUseLimits): void {
  if (!(limits.maxPixelSteps > 0)) return;
  const count = job.count ?? 1;
  const cost = job.width * job.height * job.steps * count;
  if (cost <= limits.maxPixelSteps) return;
  const formula = count > 1 ? "width × height × steps × count" : "width × height × steps";
  const factors = [job.width, job.height, job.steps, ...(count > 1 ? [count] : [])].join("×");
  throw new AppError(
    "JOB_TOO_LARGE",
    `${formula} is ${factors} = ${cost}, above this server's limit of ${limits.maxPixelSteps} (PIXELAI_MAX_PIXEL_STEPS); use fewer ${count > 1 ? "candidates, " : ""}steps or a smaller size`,
    { pixelSteps: cost, maxPixelSteps: limits.maxPixelSteps },
  );
}

export function checkQueuedCount(unfinished: number, limits: FairUseLimits): void {
  if (!(limits.maxQueuedPerClient > 0) || unfinished < limits.maxQueuedPerClient) return;
  throw new AppError(
    "TOO_MANY_QUEUED",
    `you already have ${unfinished} jobs queued or running; the limit is ${limits.maxQueuedPerClient} per client (PIXELAI_MAX_QUEUED_PER_CLIENT). Wait for some to finish or cancel them`,
    { unfinished, maxQueuedPerClient: limits.maxQueuedPerClient },
  );
}

/**
 * What makes two submissions "the same" for an idempotency key: the body as sent, keys in a fixed order, the key itself
 * left out. A random seed (absent or -1) is part of the body as sent, so a repeat gets the first job and its seed.
 */
export function requestHash(req: GenerateJobRequest): string {
  const { idempotencyKey: _key, ...body } = req;
  return createHash("sha256").update(canonicalJson(body)).digest("hex");
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}
