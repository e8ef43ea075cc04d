import { ADMIN_SESSION_S, sessionToken, validSessionToken } from "./admin-session";
import { sameSecret } from "../same-secret";

describe("admin browser session", () => {
  const key = "k-0123456789";
  const now = Date.parse("2026-11-24T12:00:00Z");

  it("accepts its own token until it expires, and never carries the key", () => {
    const token = sessionToken(key, now);
    expect(token).not.toContain(key);
    expect(validSessionToken(token, key, now)).toBe(true);
    expect(validSessionToken(token, key, now + (ADMIN_SESSION_S - 1) * 1000)).toBe(true);
    expect(validSessionToken(token, key, now + ADMIN_SESSION_S * 1000)).toBe(false);
  });

  it("rejects tokens signed with another key, a moved expiry, and junk", () => {
    const token = sessionToken(key, now);
    expect(validSessionToken(token, "another-key", now)).toBe(false);
    const [exp, sig] = token.split(".");
    expect(validSessionToken(`${Number(exp) + 3600}.${sig}`, key, now)).toBe(false);
    for (const junk of [undefined, "", "abc", `${exp}.`, `${exp}.${sig}x`, `-1.${sig}`])
      expect(validSessionToken(junk, key, now)).toBe(false);
  });

  it("compares secrets of any length", () => {
    expect(sameSecret(key, key)).toBe(true);
    expect(sameSecret(key.slice(0, 3), key)).toBe(false);
    expect(sameSecret("", key)).toBe(false);
  });
});
