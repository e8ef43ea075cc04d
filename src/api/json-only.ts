import type { Request, RequestHandler } from "express";
import { isLegacyPath, legacyFailure } from "./legacy/legacy-shape";

const BODY_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

function isJsonType(contentType: string): boolean {
  const media = contentType.split(";")[0].trim().toLowerCase();
  return media === "application/json" || (media.startsWith("application/") && media.endsWith("+json"));
}

function hasBody(req: Request): boolean {
  const length = req.headers["content-length"];
  return req.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0");
}

/**
 * Bodies must be declared JSON. A web page can send text/plain, form and multipart bodies (and typeless Blobs) to any
 * site without a CORS preflight; `application/json` needs one, which a foreign origin never passes here. So a body of
 * any other type, or of none, is refused with 415 before anything parses it. A request without a body needs no type
 * (`curl -X POST .../cancel`). The old extension sends `Content-Type: application/json` with every body, so the legacy
 * routes follow the same rule and answer in their own shape.
 */
export const requireJsonBodies: RequestHandler = (req, res, next) => {
  if (!BODY_METHODS.has(req.method)) return next();
  const type = req.headers["content-type"];
  if (type === undefined ? !hasBody(req) : isJsonType(type)) return next();
  const message =
    type === undefined
      ? "a request body needs Content-Type: application/json"
      : `Content-Type ${JSON.stringify(type)} is not accepted: send the body as application/json`;
  res
    .status(415)
    .json(
      isLegacyPath(req.path) ? legacyFailure("UNSUPPORTED_MEDIA_TYPE", message) : { error: { code: "UNSUPPORTED_MEDIA_TYPE", message } },
    );
};
