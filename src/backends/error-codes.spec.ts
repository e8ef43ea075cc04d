import { execFileSync } from "node:child_process";
import path from "node:path";
import { ERROR_CODES } from "./error-codes";

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
