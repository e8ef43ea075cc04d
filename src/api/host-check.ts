import type { RequestHandler } from "express";

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
  const allowed = new Set(allowedHosts.map((h) => h.toLowerCase()));
  const allowAll = allowed.has("*");
  return (req, res, next) => {
    if (allowAll) return next();
    const host = req.headers.host;
    if (!host || !allowed.has(hostnameOf(host))) {
      res.status(403).json({ error: { code: "FORBIDDEN", message: `host ${JSON.stringify(host ?? "")} is not allowed (PIXELAI_ALLOWED_HOSTS)` } });
      return;
    }
    const origin = req.headers.origin;
    if (origin && origin !== "null") {
      let originHost = "";
      try {
        originHost = hostnameOf(new URL(origin).host);
      } catch {
        originHost = "";
      }
      if (!allowed.has(originHost)) {
        res.status(403).json({ error: { code: "FORBIDDEN", message: `origin ${JSON.stringify(origin)} is not allowed` } });
        return;
      }
    }
    next();
  };
}
