import type { RequestHandler } from "express";
import { isLegacyPath, legacyFailure } from "./legacy/legacy-shape";

export interface OriginPolicy {
  /** Host names (no port) that may appear in `Host`; `*` allows any. */
  allowedHosts: string[];
  /** Browser origins (scheme + host + port) of other pages that may act on the API; they also get CORS headers. */
  allowedOrigins: string[];
}

function hostnameOf(hostHeader: string): string {
  // "[::1]:5000" keeps its brackets; "localhost:5000" drops the port
  if (hostHeader.startsWith("[")) return hostHeader.slice(0, hostHeader.indexOf("]") + 1).toLowerCase();
  return hostHeader.split(":")[0].toLowerCase();
}

/** `scheme://host:port` with the default port made explicit, so "http://a" and "http://a:80" compare equal. */
export function normalOrigin(origin: string): string | null {
  try {
    const url = new URL(origin);
    if (url.protocol !== "http:" && url.protocol !== "https:") return null;
    const port = url.port || (url.protocol === "https:" ? "443" : "80");
    return `${url.protocol}//${url.hostname.toLowerCase()}:${port}`;
  } catch {
    return null;
  }
}

/**
 * Why this request may not act, or null. Two guards in one rule, shared by HTTP and the WebSocket upgrade:
 *  - DNS rebinding: a page on evil.example that resolves to 127.0.0.1 still sends `Host: evil.example`, so only listed
 *    host names may talk to us at all.
 *  - Cross-site requests: a browser always sends `Origin` on a cross-origin POST and on every WebSocket upgrade. A page
 *    may act only from our own origin (Swagger UI at /docs: Origin equals `http://` + Host) or from an origin listed in
 *    PIXELAI_ALLOWED_ORIGINS, compared as scheme + host + port: another local web app on another port is another site.
 *    `Origin: null` (sandboxed iframes, `data:` and `file:` pages, cross-origin redirects) names no site we could
 *    trust, so it is refused. Requests without Origin (curl, Aseprite, the old extension) are not from a page.
 */
export function hostChecker(policy: OriginPolicy): (host: string | undefined, origin: string | undefined) => string | null {
  const hosts = new Set(policy.allowedHosts.map((h) => h.toLowerCase()));
  const anyHost = hosts.has("*");
  const origins = new Set(policy.allowedOrigins.map(normalOrigin).filter((o): o is string => o !== null));
  return (host, origin) => {
    if (!host) return "the Host header is required";
    if (!anyHost && !hosts.has(hostnameOf(host))) return `host ${JSON.stringify(host)} is not allowed (PIXELAI_ALLOWED_HOSTS)`;
    if (origin === undefined) return null;
    if (origin === "null") return "requests from an opaque origin (Origin: null) are not allowed";
    const normal = normalOrigin(origin);
    if (normal !== null && (origins.has(normal) || sameOrigin(normal, host))) return null;
    return `origin ${JSON.stringify(origin)} is not allowed (PIXELAI_ALLOWED_ORIGINS)`;
  };
}

function sameOrigin(normal: string, host: string): boolean {
  return normal === normalOrigin(`http://${host}`) || normal === normalOrigin(`https://${host}`);
}

/** The HTTP guard: refusals answer 403 FORBIDDEN (400 without a Host header), in the legacy shape on legacy paths. */
export function hostCheck(policy: OriginPolicy): RequestHandler {
  const check = hostChecker(policy);
  return (req, res, next) => {
    const rejection = check(req.headers.host, req.headers.origin);
    if (rejection) {
      const [status, code] = req.headers.host ? [403, "FORBIDDEN" as const] : [400, "INVALID_REQUEST" as const];
      // the seed's extension reads only {success, error, code}: a refusal on its paths must speak that shape too
      res.status(status).json(isLegacyPath(req.path) ? legacyFailure(code, rejection) : { error: { code, message: rejection } });
      return;
    }
    next();
  };
}

const CORS_METHODS = "GET, POST, PUT, DELETE";
const CORS_HEADERS = "Content-Type, X-API-Key";

/**
 * CORS only for the origins an operator listed: they may read answers (and send preflighted JSON). Without a list no
 * `Access-Control-Allow-Origin` is ever sent, so a foreign page can read nothing even where it could send something.
 */
export function corsPolicy(allowedOrigins: string[]): RequestHandler {
  const origins = new Set(allowedOrigins.map(normalOrigin).filter((o): o is string => o !== null));
  return (req, res, next) => {
    const origin = req.headers.origin;
    const normal = origin ? normalOrigin(origin) : null;
    if (!origin || normal === null || !origins.has(normal)) return next();
    res.vary("Origin");
    res.setHeader("Access-Control-Allow-Origin", origin);
    res.setHeader("Access-Control-Expose-Headers", "Location, Retry-After");
    if (req.method === "OPTIONS" && req.headers["access-control-request-method"]) {
      res.setHeader("Access-Control-Allow-Methods", CORS_METHODS);
      res.setHeader("Access-Control-Allow-Headers", CORS_HEADERS);
      res.setHeader("Access-Control-Max-Age", "600");
      res.status(204).end();
      return;
    }
    next();
  };
}
