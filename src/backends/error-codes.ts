/**
 * The error taxonomy, shared with python/pixelai_runner/errors.py (error-codes.spec.ts checks they are equal).
 * code → HTTP status the API answers with when the code surfaces in a request.
 */
export const ERROR_CODES = {
  INVALID_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  MODEL_NOT_FOUND: 404,
  LORA_NOT_FOUND: 404,
  JOB_NOT_CANCELLABLE: 409,
  JOB_NOT_FINISHED: 409,
  MODEL_NOT_CONVERTED: 409,
  PAYLOAD_TOO_LARGE: 413,
  LORA_UNSUPPORTED_ENGINE: 422,
  RATE_LIMITED: 429,
  ENGINE_INTERNAL: 500,
  HASH_MISMATCH: 500,
  CONVERSION_FAILED: 500,
  CANCELLED: 409,
  ENGINE_UNAVAILABLE: 503,
  TIMEOUT: 504,
  CUDA_OOM: 507,
  MPS_OOM: 507,
  // Installs from the hub (python/pixelai_runner/hub_install.py); each comes with a hint.
  HUB_NOT_FOUND: 404,
  HUB_ACCESS_DENIED: 403,
  UNSAFE_WEIGHTS: 422,
  HUB_REPO_UNSUPPORTED: 422,
  HUB_UNREACHABLE: 503,
  INSUFFICIENT_STORAGE: 507,
  INSTALL_FAILED: 500,
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
