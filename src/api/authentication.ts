import type { Request } from "express";
import { AppError } from "../backends/error-codes";
import { sameSecret } from "./same-secret";
import { apiServices } from "./services";

/** tsoa calls this for routes marked @Security("apiKey"): admin routes need X-API-Key when PIXELAI_API_KEY is set. */
export async function expressAuthentication(req: Request, securityName: string): Promise<unknown> {
  if (securityName !== "apiKey") throw new AppError("UNAUTHORIZED", `unknown security scheme ${securityName}`);
  const expected = apiServices().config.apiKey;
  if (!expected) return { admin: true };
  if (!sameSecret(req.header("x-api-key") ?? "", expected)) {
    throw new AppError("UNAUTHORIZED", "this route needs the admin key in the X-API-Key header");
  }
  return { admin: true };
}
