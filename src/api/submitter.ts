import { createHash } from "node:crypto";
import type { Request } from "express";
import type { Submitter } from "../jobs/fair-use";
import { sameSecret } from "./same-secret";

/**
 * Who sent a submission, for POST /jobs, POST /generate and the /ws submit frame alike. A request carrying the
 * configured admin key is the key's client (and may jump the queue); any other request, with no key or a wrong one, is
 * its peer address. A made-up key is not an identity: otherwise rotating keys would dodge the per-client caps.
 */
export function submitterOf(adminKey: string | undefined, givenKey: string | undefined, address: string | undefined): Submitter {
  if (adminKey && givenKey !== undefined && sameSecret(givenKey, adminKey)) {
    return { client: `key:${sha256(adminKey).slice(0, 16)}`, admin: true };
  }
  return { client: `ip:${address ?? "unknown"}`, admin: false };
}

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** The X-API-Key header of a request (the last one when repeated). */
export function apiKeyHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[value.length - 1] : value;
}

/** An Express request's submitter; the address is the one the rate limiter (rate-limit.ts) keys on too. */
export function submitterOfRequest(req: Request, adminKey: string | undefined): Submitter {
  return submitterOf(adminKey, req.header("x-api-key"), req.ip ?? req.socket.remoteAddress);
}
