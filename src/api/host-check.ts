import type { RequestHandler } from "express";
import { isLegacyPath, legacyFailure } from "./legacy/legacy-shape";

function hostnameOf(hostHeader: string): string {
  // "[::1]:5000" keeps its brackets; "localhost:5000" drops the port
  if (hostHeader.startsWith("[")) return hostHeader.slice(0, hostHeader.indexOf("]") + 1).toLowerCase();
  return hostHeader.split(":")[0].toLowerCase();
}

/**
 * DNS-rebinding guard: a page on evil.example that resolves to 127.0.0.1 still sends `Host: evil.example`, so only
 * listed host names may talk to us; a browser Origin must be listed too. Requests without Origin (curl, Aseprite) pass.
 */
export function hostCheck(allowedHosts: string[]): RequestHandler {
  const check = hostChecker(allowedHosts);
  return (req, res, next) => {
    const rejection = check(req.headers.host, req.headers.origin);
    if (rejection) {
      // the seed's extension reads only {success, error, code}: a refusal on its paths must speak that shape too
      res
        .status(403)
        .json(isLegacyPath(req.path) ? legacyFailure("FORBIDDEN", rejection) : { error: { code: "FORBIDDEN", message: rejection } });
      return;
    }
    next();
  };
}

/**
 * The same rule as a plain function of the two headers, for requests that never reach Express (the WebSocket
 * upgrade): the reason for refusing, or null when allowed.
 */
export function hostChecker(allowedHosts: string[]): (host: string | undefined, origin: string | undefined) => string | null {
  const allowed = new Set(allowedHosts.map((h) => h.toLowerCase()));
  const allowAll = allowed.has("*");
  return (host, origin) => {
    if (allowAll) return null;
    if (!host || !allowed.has(hostnameOf(host))) {
      return `host ${JSON.stringify(host ?? "")} is not allowed (PIXELAI_ALLOWED_HOSTS)`;
    }
    if (origin && origin !== "null") {
      let originHost: string;
      try {
        originHost = hostnameOf(new URL(origin).host);
      } catch {
        originHost = "";
      }
      if (!allowed.has(originHost)) return `origin ${JSON.stringify(origin)} is not allowed`;
    }
    return null;
  };
}
