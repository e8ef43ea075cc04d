import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { ExpressAdapter } from "@bull-board/express";
import type { Queue } from "bullmq";
import { RequestHandler, Router } from "express";
import { adminGate } from "./admin-session";

export const ADMIN_QUEUES_PATH = "/admin/queues";

/**
 * Bull Board over the BullMQ queues ("generate", "convert") behind the admin gate. Read-only on purpose: the database
 * is the source of truth for jobs, so retries, removals and cancellations go through the API (POST /jobs/{id}/cancel,
 * DELETE /jobs/{id}), which keeps records and queue in step; the board is for looking.
 */
export function queuesBoard(queues: Queue[], apiKey: string | undefined): Router {
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(ADMIN_QUEUES_PATH);
  createBullBoard({
    queues: queues.map((q) => new BullMQAdapter(q, { readOnlyMode: true })),
    serverAdapter,
    options: { uiConfig: { boardTitle: "PixelAI queues" } },
  });
  const router = Router();
  router.use(ADMIN_QUEUES_PATH, adminGate(apiKey, ADMIN_QUEUES_PATH), readOnly, serverAdapter.getRouter());
  return router;
}

/** The board only reads, so it takes only reads: anything else is answered here, in the API's error shape. */
const readOnly: RequestHandler = (req, res, next) => {
  if (req.method === "GET" || req.method === "HEAD") return next();
  res
    .status(405)
    .set("Allow", "GET, HEAD")
    .json({ error: { code: "METHOD_NOT_ALLOWED", message: `the queue board is read-only: ${req.method} is not allowed` } });
};
