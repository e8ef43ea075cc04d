import { createHmac } from "node:crypto";
import type { Request, RequestHandler, Response } from "express";
import { sameSecret } from "../same-secret";

export const ADMIN_COOKIE = "pixelai_admin";
/** A browser session opened with ?key= lasts this long; rotating PIXELAI_API_KEY ends every session at once. */
export const ADMIN_SESSION_S = 12 * 3600;

function signature(apiKey: string, expiresAt: number): string {
  return createHmac("sha256", apiKey).update(`pixelai-admin-session:${expiresAt}`).digest("base64url");
}

/** Cookie value `<expiry epoch s>.<HMAC>`: the key itself never reaches the cookie jar, and nothing is kept server-side. */
export function sessionToken(apiKey: string, nowMs = Date.now()): string {
  const expiresAt = Math.floor(nowMs / 1000) + ADMIN_SESSION_S;
  return `${expiresAt}.${signature(apiKey, expiresAt)}`;
}

export function validSessionToken(token: string | undefined, apiKey: string, nowMs = Date.now()): boolean {
  const match = token ? /^(\d{1,12})\.([A-Za-z0-9_-]{43})$/.exec(token) : null;
  if (!match) return false;
  const expiresAt = Number(match[1]);
  if (expiresAt * 1000 <= nowMs) return false;
  return sameSecret(match[2], signature(apiKey, expiresAt));
}

function cookie(req: Request, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function deny(res: Response, message: string): void {
  res.status(401).json({ error: { code: "UNAUTHORIZED", message } });
}

/**
 * Admin gate for browser pages under `mountPath` (Bull Board). Without PIXELAI_API_KEY admin is open, as for the
 * other admin routes (the server binds to 127.0.0.1 and checks Host). With a key:
 *  - `X-API-Key` works as everywhere else (curl, scripts);
 *  - a browser opens `<mountPath>?key=<key>` once: the key is checked, an HttpOnly SameSite=Strict cookie scoped to
 *    `mountPath` carries a signed expiry (not the key), and a 303 drops the key from the address bar;
 *  - then the cookie admits the page and its API calls. SameSite=Strict keeps other sites from riding on it.
 */
export function adminGate(apiKey: string | undefined, mountPath: string): RequestHandler {
  if (!apiKey) return (_req, _res, next) => next();
  const hint = `open ${mountPath}?key=<PIXELAI_API_KEY> in the browser once, or send the X-API-Key header`;
  return (req, res, next) => {
    const header = req.header("x-api-key");
    if (header !== undefined) return sameSecret(header, apiKey) ? next() : deny(res, `wrong admin key; ${hint}`);
    const queryKey = req.query.key;
    if (typeof queryKey === "string") {
      if (!sameSecret(queryKey, apiKey)) return deny(res, `wrong admin key; ${hint}`);
      const secure = req.secure ? "; Secure" : "";
      res.setHeader(
        "Set-Cookie",
        `${ADMIN_COOKIE}=${sessionToken(apiKey)}; Path=${mountPath}; Max-Age=${ADMIN_SESSION_S}; HttpOnly; SameSite=Strict${secure}`,
      );
      const url = new URL(req.originalUrl, "http://local");
      url.searchParams.delete("key");
      res.setHeader("Cache-Control", "no-store");
      return res.redirect(303, `${url.pathname}${url.search}`);
    }
    if (validSessionToken(cookie(req, ADMIN_COOKIE), apiKey)) return next();
    deny(res, `this page needs the admin key; ${hint}`);
  };
}
