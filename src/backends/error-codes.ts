/**
 * The error taxonomy, shared with python/pixelai_runner/errors.py (error-codes.spec.ts checks they are equal).
 * code → HTTP status the API answers with when the code surfaces in a request.
 */
export const ERROR_CODES = {
  INVALID_REQUEST: 400,
  // width × height × steps above PIXELAI_MAX_PIXEL_STEPS
  JOB_TOO_LARGE: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  // a priority above the default without the admin key (src/jobs/fair-use.ts)
  PRIORITY_FORBIDDEN: 403,
  NOT_FOUND: 404,
  MODEL_NOT_FOUND: 404,
  LORA_NOT_FOUND: 404,
  JOB_NOT_CANCELLABLE: 409,
  JOB_NOT_FINISHED: 409,
  // an idempotency key repeated by its client with another body
  IDEMPOTENCY_CONFLICT: 409,
  MODEL_NOT_CONVERTED: 409,
  MODEL_NOT_INSTALLED: 409,
  // the server's own refusals of a request's form: a method a route does not take, a client too slow to send its
  // request, a body that is not JSON, headers over Node's limit
  METHOD_NOT_ALLOWED: 405,
  REQUEST_TIMEOUT: 408,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  HEADERS_TOO_LARGE: 431,
  LORA_UNSUPPORTED_ENGINE: 422,
  // an img2img job (inputImage + prompt) on an engine whose probe says img2img false
  IMG2IMG_UNSUPPORTED: 422,
  // a mask (inpainting) on an engine whose probe says inpaint false
  INPAINT_UNSUPPORTED: 422,
  RATE_LIMITED: 429,
  // a client already has PIXELAI_MAX_QUEUED_PER_CLIENT jobs queued or running
  TOO_MANY_QUEUED: 429,
  ENGINE_INTERNAL: 500,
  HASH_MISMATCH: 500,
  CONVERSION_FAILED: 500,
  CANCELLED: 409,
  ENGINE_UNAVAILABLE: 503,
  TIMEOUT: 504,
  CUDA_OOM: 507,
  MPS_OOM: 507,
  // a model larger than the whole PIXELAI_MEMORY_BUDGET_MB (src/workers/model-memory.ts)
  INSUFFICIENT_MEMORY: 507,
  // Installs from the hub (python/pixelai_runner/hub_install.py); each comes with a hint.
  HUB_NOT_FOUND: 404,
  HUB_ACCESS_DENIED: 403,
  UNSAFE_WEIGHTS: 422,
  HUB_REPO_UNSUPPORTED: 422,
  HUB_UNREACHABLE: 503,
  INSUFFICIENT_STORAGE: 507,
  INSTALL_FAILED: 500,
  // WebSocket limits (src/api/ws/ws-limits.ts): a connection past the per-client cap is told so before it is closed
  // (4029); a watch past the per-connection cap is refused with an error frame and the connection stays open.
  TOO_MANY_CONNECTIONS: 429,
  TOO_MANY_WATCHES: 429,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.prototype.hasOwnProperty.call(ERROR_CODES, value);
}

/** An error that carries a taxonomy code; the API's error mapper turns it into `{error:{code,message,details?}}`. */
export class AppError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = "AppError";
    this.status = ERROR_CODES[code];
  }
}

/** Why a job or attempt ended, as stored in a row and carried through BullMQ's failure reason. */
export interface Failure {
  code: ErrorCode;
  message: string;
}

/**
 * The one text form of a Failure (BullMQ keeps only a string as a job's failure reason). JSON, so a message may hold any
 * text, colons included, and the code never has to be guessed back out of prose.
 */
export function encodeFailure(code: ErrorCode, message: string): string {
  return JSON.stringify({ code, message });
}

/**
 * Reads a reason back. Anything that is not one of ours (BullMQ's own "job stalled more than allowable limit", a
 * process that died mid-write) is an ENGINE_INTERNAL failure carrying the text as its message.
 */
export function decodeFailure(reason: string | undefined | null): Failure {
  const text = reason ?? "";
  try {
    const parsed = JSON.parse(text) as Partial<Failure> | null;
    if (parsed && typeof parsed === "object" && isErrorCode(parsed.code) && typeof parsed.message === "string") {
      return { code: parsed.code, message: parsed.message };
    }
  } catch {
    // not JSON: a reason BullMQ wrote itself
  }
  return { code: "ENGINE_INTERNAL", message: text || "failed in the queue" };
}

/** The Failure an error stands for: its taxonomy code when it has one, else ENGINE_INTERNAL (a bug or a crash). */
export function failureOf(err: unknown): Failure {
  if (err instanceof AppError) return { code: err.code, message: err.message };
  const message = err instanceof Error ? err.message : String(err);
  return { code: "ENGINE_INTERNAL", message };
}
