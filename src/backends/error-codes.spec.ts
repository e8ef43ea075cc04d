import { execFileSync } from "node:child_process";
import path from "node:path";
import { AppError, decodeFailure, encodeFailure, ERROR_CODES, failureOf } from "./error-codes";

const repo = path.resolve(__dirname, "../..");

describe("error taxonomy", () => {
  it("is the same list with the same HTTP statuses in TypeScript and Python", () => {
    const out = execFileSync(
      path.join(repo, ".venv/bin/python"),
      ["-c", "import json; from pixelai_runner.errors import ERROR_CODES; print(json.dumps(ERROR_CODES))"],
      {
        env: { ...process.env, PYTHONPATH: path.join(repo, "python") },
      },
    ).toString();
    expect(JSON.parse(out)).toEqual(ERROR_CODES);
  });

  it("covers every code docs/design.md names", () => {
    for (const code of [
      "INVALID_REQUEST",
      "UNAUTHORIZED",
      "NOT_FOUND",
      "MODEL_NOT_FOUND",
      "LORA_NOT_FOUND",
      "MODEL_NOT_CONVERTED",
      "LORA_UNSUPPORTED_ENGINE",
      "ENGINE_UNAVAILABLE",
      "CUDA_OOM",
      "MPS_OOM",
      "HASH_MISMATCH",
      "CONVERSION_FAILED",
      "CANCELLED",
      "TIMEOUT",
      "ENGINE_INTERNAL",
    ]) {
      expect(ERROR_CODES).toHaveProperty(code);
    }
  });
});

describe("failure codec", () => {
  it("round-trips a code and a message holding colons, quotes and newlines", () => {
    const message = 'TIMEOUT: "it" ran\npast: 5 ms';
    expect(decodeFailure(encodeFailure("CUDA_OOM", message))).toEqual({ code: "CUDA_OOM", message });
  });

  it("reads reasons it did not write (BullMQ's own, the old text form, garbage) as ENGINE_INTERNAL with the text kept", () => {
    expect(decodeFailure("job stalled more than allowable limit")).toEqual({
      code: "ENGINE_INTERNAL",
      message: "job stalled more than allowable limit",
    });
    expect(decodeFailure("CUDA_OOM: out of memory").code).toBe("ENGINE_INTERNAL");
    expect(decodeFailure(JSON.stringify({ code: "NOPE", message: "x" })).code).toBe("ENGINE_INTERNAL");
    expect(decodeFailure("null").code).toBe("ENGINE_INTERNAL");
    expect(decodeFailure(undefined)).toEqual({ code: "ENGINE_INTERNAL", message: "failed in the queue" });
  });

  it("takes an error's taxonomy code, and ENGINE_INTERNAL for anything else", () => {
    expect(failureOf(new AppError("TIMEOUT", "too slow"))).toEqual({ code: "TIMEOUT", message: "too slow" });
    expect(failureOf(new Error("boom"))).toEqual({ code: "ENGINE_INTERNAL", message: "boom" });
    expect(failureOf("text")).toEqual({ code: "ENGINE_INTERNAL", message: "text" });
  });
});
