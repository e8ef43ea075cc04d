import type { IncomingMessage } from "node:http";
import express, { Express } from "express";
import swaggerUi from "swagger-ui-express";
import { RegisterRoutes } from "../generated/routes";
import spec from "../generated/swagger.json";
import { queuesBoard } from "./admin/queues-board";
import { errorHandler, notFoundHandler } from "./error-handler";
import { corsPolicy, hostCheck } from "./host-check";
import { requireJsonBodies } from "./json-only";
import { rateLimitSubmit } from "./rate-limit";
import { createLegacyRouter } from "./legacy/legacy.router";
import { ApiServices, setApiServices } from "./services";
import type { Logger } from "../infra/logger";
import { AppError } from "../backends/error-codes";
import { MAX_BODY_BYTES, MAX_JOB_BODY_BYTES, overBodyLimit } from "../jobs/input-image";

export const BODY_LIMIT = MAX_BODY_BYTES;

/** The HTTP app: host check, JSON body, tsoa routes, Swagger UI, and one JSON error mapper after everything. */
export function createApp(services: ApiServices, logger: Logger): Express {
  setApiServices(services);
  const app = express();
  app.disable("x-powered-by");
  app.set("query parser", "simple");
  app.use(hostCheck(services.config));
  app.use(corsPolicy(services.config.allowedOrigins));
  // Bull Board (behind the admin gate), ahead of the JSON parser: it serves pages and its own API.
  if (services.adminQueues) app.use(queuesBoard(services.adminQueues, services.config.apiKey));
  app.use(requireJsonBodies);
  // Submissions only, ahead of the legacy router so POST /generate is covered too (rate-limit.ts).
  if (services.rateLimiter) {
    app.post("/jobs", rateLimitSubmit(services.rateLimiter, "v1"));
    app.post("/generate", rateLimitSubmit(services.rateLimiter, "legacy"));
  }
  // The seed server's routes, before the JSON parser: they parse their own bodies to answer errors in the old shape.
  app.use(createLegacyRouter(services, logger));
  // Bodies reaching here are JSON or typeless and empty (json-only.ts). POST /jobs may carry an input image (its own limit, 413 PAYLOAD_TOO_LARGE, is in src/jobs/input-image.ts); the rest of its body, like every
  // other body, is held to BODY_LIMIT.
  app.post(
    "/jobs",
    express.json({ limit: MAX_JOB_BODY_BYTES, type: () => true, strict: true, verify: rememberBodySize }),
    (req, _res, next) => {
      const size = (req as SizedRequest).bodyBytes ?? 0;
      next(
        overBodyLimit(size, req.body)
          ? new AppError("PAYLOAD_TOO_LARGE", `request body too large: over ${BODY_LIMIT} bytes besides inputImage and mask`)
          : undefined,
      );
    },
  );
  app.use(express.json({ limit: BODY_LIMIT, type: () => true, strict: true }));
  app.get("/openapi.json", (_req, res) => {
    res.json(spec);
  });
  app.use("/docs", swaggerUi.serve, swaggerUi.setup(spec as object, { customSiteTitle: "PixelAI API" }));
  RegisterRoutes(app);
  app.use(notFoundHandler);
  app.use(errorHandler(logger));
  return app;
}

type SizedRequest = IncomingMessage & { bodyBytes?: number };

function rememberBodySize(req: IncomingMessage, _res: unknown, buf: Buffer): void {
  (req as SizedRequest).bodyBytes = buf.length;
}
