local errors = require("errors")

-- The taxonomy of docs/design.md (src/backends/error-codes.ts).
local SERVER_CODES = {
  "INVALID_REQUEST", "UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND", "MODEL_NOT_FOUND", "LORA_NOT_FOUND",
  "JOB_NOT_CANCELLABLE", "JOB_NOT_FINISHED", "MODEL_NOT_CONVERTED", "PAYLOAD_TOO_LARGE", "LORA_UNSUPPORTED_ENGINE",
  "RATE_LIMITED", "ENGINE_INTERNAL", "HASH_MISMATCH", "CONVERSION_FAILED", "CANCELLED",
  "ENGINE_UNAVAILABLE", "TIMEOUT", "CUDA_OOM", "MPS_OOM", "TOO_MANY_CONNECTIONS", "TOO_MANY_WATCHES",
}

describe("errors", function()
  it("has plain words for every code of the taxonomy", function()
    for _, code in ipairs(SERVER_CODES) do
      assert.is_true(errors.known(code), code)
      local text = errors.describe(code)
      assert.is_string(text)
      assert.is_falsy(text:find(code, 1, true), code .. " should be described, not echoed")
    end
  end)

  it("tells how to convert a model that has no MLX version", function()
    local text = errors.describe("MODEL_NOT_CONVERTED", nil, { model = "tiny-sd" })
    assert.matches("POST /models/tiny%-sd/conversions", text)
    assert.matches("python scripts/convert_to_mlx.py", text)
  end)

  it("names the server URL and `make start` when the server is down", function()
    local text = errors.describe("SERVER_UNREACHABLE", nil, { url = "ws://127.0.0.1:5000/ws" })
    assert.equals("PixelAI server not reachable at ws://127.0.0.1:5000/ws — start it with `make start`", text)
  end)

  it("appends the server's message and handles unknown codes", function()
    assert.matches("%(model 'x' missing%)$", errors.describe("MODEL_NOT_FOUND", "model 'x' missing", { model = "x" }))
    assert.equals("Server error SOMETHING_NEW. (detail)", errors.describe("SOMETHING_NEW", "detail"))
  end)
end)
