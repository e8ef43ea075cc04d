import { AppError } from "../../backends/error-codes";
import type { GenerateJobRequest } from "../../jobs/jobs.dto";
import { toErrorBody } from "../error-handler";
import { validateJobRequest } from "../job-validation";
import { MAX_BODY_BYTES, MAX_JOB_BODY_BYTES, overBodyLimit } from "../../jobs/input-image";

/**
 * Largest client frame we read, an input image aside; the extension's biggest frame (a submit with a 2 000-character
 * prompt) is ~5 KiB.
 */
export const MAX_FRAME_BYTES = MAX_BODY_BYTES;
/** A submit may carry an input image (a pixelize job), as POST /jobs may: the same limit as that body. */
export const MAX_SUBMIT_FRAME_BYTES = MAX_JOB_BODY_BYTES;

export type ClientFrame =
  | { type: "submit"; requestId: string; job: GenerateJobRequest }
  | { type: "cancel"; id: string }
  | { type: "subscribe"; id: string }
  | { type: "engines" };

/** What an unusable frame is answered with (sent as `{type:"error", ...}`); the connection stays open. */
export interface FrameError {
  code: string;
  message: string;
  requestId?: string;
  id?: string;
}

export type ParsedFrame = { ok: true; frame: ClientFrame } | { ok: false; error: FrameError };

const TYPES = ["submit", "cancel", "subscribe", "engines"] as const;

function invalid(message: string, extra: Partial<FrameError> = {}): ParsedFrame {
  return { ok: false, error: { code: "INVALID_REQUEST", message, ...extra } };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function stringField(obj: Record<string, unknown>, name: string, max: number): string | undefined {
  const v = obj[name];
  return typeof v === "string" && v.length >= 1 && v.length <= max ? v : undefined;
}

/**
 * Turns one incoming WebSocket message into a frame, or into the error frame that answers it. The job of a submit is
 * checked by the same tsoa validation as POST /jobs (unknown fields rejected); the envelope tolerates extra fields so a
 * newer extension can add some without breaking against this server.
 */
export function parseClientFrame(data: Buffer, isBinary: boolean): ParsedFrame {
  if (isBinary) return invalid("binary frames are not part of this protocol; send JSON text frames");
  const tooLarge = (limit: number, beside = ""): ParsedFrame => ({
    ok: false,
    error: { code: "PAYLOAD_TOO_LARGE", message: `frame is ${data.length} bytes; the limit is ${limit}${beside}` },
  });
  if (data.length > MAX_SUBMIT_FRAME_BYTES) return tooLarge(MAX_SUBMIT_FRAME_BYTES);
  let value: unknown;
  try {
    value = JSON.parse(data.toString("utf8"));
  } catch (err) {
    if (data.length > MAX_FRAME_BYTES) return tooLarge(MAX_FRAME_BYTES);
    return invalid(`frame is not valid JSON: ${(err as Error).message}`);
  }
  // Only a submit's input image may take a frame past MAX_FRAME_BYTES.
  const job = isPlainObject(value) && value.type === "submit" ? value.job : undefined;
  if (overBodyLimit(data.length, job)) return tooLarge(MAX_FRAME_BYTES, job === undefined ? "" : " besides job.inputImage and job.mask");
  if (!isPlainObject(value)) return invalid('frame must be a JSON object with a "type"');
  const type = value.type;
  if (typeof type !== "string" || !(TYPES as readonly string[]).includes(type)) {
    return invalid(`unknown frame type ${JSON.stringify(type ?? null)}; expected one of ${TYPES.join(", ")}`);
  }
  switch (type as (typeof TYPES)[number]) {
    case "submit": {
      const rawRequestId = value.requestId;
      const requestId = stringField(value, "requestId", 200);
      // Echo a usable requestId even on failure, so the client can tell which submit was refused.
      const echo = typeof rawRequestId === "string" && rawRequestId.length <= 200 && rawRequestId ? { requestId: rawRequestId } : {};
      if (!requestId) return invalid("submit needs a requestId (a string of 1–200 characters)", echo);
      if (!isPlainObject(value.job)) return invalid("submit needs a job object (the body of POST /jobs)", echo);
      try {
        return { ok: true, frame: { type: "submit", requestId, job: validateJobRequest(value.job) } };
      } catch (err) {
        const { body } = toErrorBody(err);
        return { ok: false, error: { code: body.error.code, message: body.error.message, requestId } };
      }
    }
    case "cancel":
    case "subscribe": {
      const id = stringField(value, "id", 100);
      if (!id) return invalid(`${type} needs a job id (a string)`);
      return { ok: true, frame: { type: type as "cancel" | "subscribe", id } };
    }
    case "engines":
      return { ok: true, frame: { type: "engines" } };
  }
}

/** An error thrown while handling a valid frame, as an error frame. */
export function errorFrameOf(err: unknown, context: { requestId?: string; id?: string }): FrameError {
  const { body } = toErrorBody(err);
  const message = err instanceof AppError || body.error.code !== "ENGINE_INTERNAL" ? body.error.message : "internal error";
  return { code: body.error.code, message, ...context };
}
