import express, { Express } from "express";
import swaggerUi from "swagger-ui-express";
import { RegisterRoutes } from "../generated/routes";
import spec from "../generated/swagger.json";
import { queuesBoard } from "./admin/queues-board";
import { errorHandler, notFoundHandler } from "./error-handler";
import { hostCheck } from "./host-check";
import { rateLimitSubmit } from "./rate-limit";
import { createLegacyRouter } from "./legacy/legacy.router";
import { ApiServices, setApiServices } from "./services";
import type { Logger } from "../infra/logger";

export const BODY_LIMIT = "64kb";

/** The HTTP app: host check, JSON body, tsoa routes, Swagger UI, and one JSON error mapper after everything. */
export function createApp(services: ApiServices, logger: Logger): Express {
  setApiServices(services);
  const app = express();
  app.disable("x-powered-by");
  app.set("query parser", "simple");
  app.use(hostCheck(services.config.allowedHosts));
  // Bull Board (behind the admin gate), ahead of the JSON parser: it serves pages and its own API.
  if (services.adminQueues) app.use(queuesBoard(services.adminQueues, services.config.apiKey));
  // Submissions only, ahead of the legacy router so POST /generate is covered too (rate-limit.ts).
  if (services.rateLimiter) {
    app.post("/jobs", rateLimitSubmit(services.rateLimiter, "v1"));
    app.post("/generate", rateLimitSubmit(services.rateLimiter, "legacy"));
  }
  // The seed server's routes, before the JSON parser: they parse their own bodies to answer errors in the old shape.
  app.use(createLegacyRouter(services, logger));
  // Any content type is parsed as JSON: the seed's clients and curl users often omit the header.
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
