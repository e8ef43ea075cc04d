import { FieldErrors, TsoaRoute, ValidateError, ValidationService } from "@tsoa/runtime";
import { PNG } from "pngjs";
import { models, validationSettings } from "../generated/validation-models";
import type { GenerateJobRequest } from "../jobs/jobs.dto";

// The models and settings are generated from the same metadata as src/generated/routes.ts (see
// scripts/tsoa-route-generator.js), so a job arriving over /ws or /generate meets exactly POST /jobs's rules.
const validation = new ValidationService(models, validationSettings);
const JOB_BODY: TsoaRoute.ParameterSchema = { in: "body", name: "body", required: true, ref: "GenerateJobRequest" };

/** Validates a job body like POST /jobs does; throws tsoa's ValidateError (→ INVALID_REQUEST via toErrorBody). */
export function validateJobRequest(value: unknown): GenerateJobRequest {
  const fieldErrors: FieldErrors = {};
  const job = validation.ValidateParam(JOB_BODY, value, "body", fieldErrors, true, undefined) as GenerateJobRequest;
  if (Object.keys(fieldErrors).length > 0) throw new ValidateError(fieldErrors, "");
  return job;
}

/** A stored result PNG as raw 8-bit RGBA rows (what Aseprite's Image.bytes takes). */
export function pngToRgba(png: Buffer): { width: number; height: number; rgba: Buffer } {
  const decoded = PNG.sync.read(png);
  return { width: decoded.width, height: decoded.height, rgba: decoded.data };
}
