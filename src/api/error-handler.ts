import type { ErrorRequestHandler, RequestHandler } from "express";
import { ValidateError } from "@tsoa/runtime";
import { AppError } from "../backends/error-codes";
import type { Logger } from "../infra/logger";

export interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown> };
}

/** Turns anything thrown in a route into `{error:{code,message,details?}}` with the taxonomy's status. Never HTML. */
export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    const { status, body } = toErrorBody(err);
    // A taxonomy error is an expected answer (e.g. an engine that is down); anything else is a bug worth a stack.
    if (status >= 500 && !(err instanceof AppError))
      logger.error({ err: err?.message, stack: err?.stack, path: req.path }, "request failed");
    else if (status >= 500) logger.warn({ code: body.error.code, err: err.message, path: req.path }, "request refused");
    if (res.headersSent) return;
    res.status(status).json(body);
  };
}

export function toErrorBody(err: unknown): { status: number; body: ErrorBody } {
  if (err instanceof AppError) {
    return {
      status: err.status,
      body: { error: { code: err.code, message: err.message, ...(err.details ? { details: err.details } : {}) } },
    };
  }
  if (err instanceof ValidateError) {
    const fields = Object.fromEntries(
      Object.entries(err.fields).map(([k, v]) => [k.replace(/^(requestBody|body)\.?/, "") || "body", v.message]),
    );
    const summary = Object.entries(fields)
      .map(([k, v]) => `${k}: ${v}`)
      .join("; ");
    return { status: 400, body: { error: { code: "INVALID_REQUEST", message: `invalid request: ${summary}`, details: { fields } } } };
  }
  const e = err as { type?: string; status?: number; message?: string };
  if (e?.type === "entity.too.large") {
    return { status: 413, body: { error: { code: "PAYLOAD_TOO_LARGE", message: "request body too large" } } };
  }
  if (e?.type === "entity.parse.failed" || e?.type === "encoding.unsupported" || e?.type === "charset.unsupported") {
    return { status: 400, body: { error: { code: "INVALID_REQUEST", message: `malformed request body: ${e.message}` } } };
  }
  if (typeof e?.status === "number" && e.status >= 400 && e.status < 500) {
    return {
      status: e.status,
      body: { error: { code: e.status === 404 ? "NOT_FOUND" : "INVALID_REQUEST", message: e.message ?? "bad request" } },
    };
  }
  return { status: 500, body: { error: { code: "ENGINE_INTERNAL", message: "internal error" } } };
}

export const notFoundHandler: RequestHandler = (req, res) => {
  res.status(404).json({ error: { code: "NOT_FOUND", message: `no route ${req.method} ${req.path}` } });
};
