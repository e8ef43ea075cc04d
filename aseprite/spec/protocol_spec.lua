local protocol = require("protocol")
local base64 = require("base64")
local fakes = require("fakes")

local json = fakes.json -- returns Aseprite-like proxies

describe("protocol frames (client -> server)", function()
  it("builds submit, cancel, subscribe and engines frames", function()
    local job = { prompt = "a knight", width = 512, height = 512 }
    assert.same({ type = "submit", requestId = "r1", job = job }, protocol.submit("r1", job))
    assert.same({ type = "cancel", id = "j1" }, protocol.cancel("j1"))
    assert.same({ type = "subscribe", id = "j1" }, protocol.subscribe("j1"))
    assert.same({ type = "engines" }, protocol.engines())
  end)

  it("encodes a full submit frame as the server expects it", function()
    local job = {
      prompt = "a knight", negativePrompt = "blurry", model = "tiny-sd", engine = "torch",
      width = 512, height = 512, steps = 20, guidanceScale = 7.5, seed = 7,
      lora = { name = "pixel-art", strength = 0.8 }, removeBackground = "color-key",
      pixel = { width = 32, height = 32, colors = 16, fitMode = "contain" },
    }
    local decoded = fakes.plainDecode(protocol.encode(json, protocol.submit("r1", job)))
    assert.same({ type = "submit", requestId = "r1", job = job }, decoded)
  end)

  it("refuses to build frames without their ids", function()
    assert.has_error(function() protocol.submit("", { prompt = "x" }) end)
    assert.has_error(function() protocol.cancel(nil) end)
  end)
end)

describe("protocol.toPlain", function()
  it("copies Aseprite json proxies, including arrays that pairs() cannot walk", function()
    local decoded = json.decode('{"a":{"b":[1,2,{"c":true}]},"list":["x","y"],"empty":[]}')
    -- the quirk: arrays yield nothing through pairs
    local n = 0
    for _ in pairs(decoded.list) do n = n + 1 end
    assert.equals(0, n)
    local plain = protocol.toPlain(decoded)
    assert.same({ a = { b = { 1, 2, { c = true } } }, list = { "x", "y" }, empty = {} }, plain)
    assert.is_nil(getmetatable(plain))
    assert.equals("integer", math.type(plain.a.b[1]))
  end)
end)

describe("protocol.parse (server -> client)", function()
  local function parse(t) return protocol.parse(json, fakes.json.encode(t)) end

  it("parses accepted, progress, failed, cancelled and error frames", function()
    assert.same({ type = "accepted", requestId = "r1", id = "j1" }, parse({ type = "accepted", requestId = "r1", id = "j1" }))
    local p = parse({ type = "progress", id = "j1", step = 3, totalSteps = 20 })
    assert.equals(3, p.step)
    assert.equals("integer", math.type(p.totalSteps))
    local f = parse({ type = "failed", id = "j1", code = "CUDA_OOM", message = "out of memory" })
    assert.same({ type = "failed", id = "j1", code = "CUDA_OOM", message = "out of memory" }, f)
    assert.same({ type = "cancelled", id = "j1" }, parse({ type = "cancelled", id = "j1" }))
    assert.same({ type = "error", code = "INVALID_REQUEST", message = "" }, parse({ type = "error", code = "INVALID_REQUEST" }))
  end)

  it("parses a completed frame and decodes its pixels", function()
    local rgba = string.rep("\255\0\0\255", 4 * 2)
    local frame = parse({ type = "completed", id = "j1", width = 4, height = 2, rgbaBase64 = base64.encode(rgba) })
    assert.equals(4, frame.width)
    assert.equals(rgba, protocol.decodeImage(frame))
  end)

  it("rejects a completed frame whose pixels do not match its size", function()
    local frame = parse({ type = "completed", id = "j1", width = 4, height = 4, rgbaBase64 = base64.encode("abcd") })
    local rgba, err = protocol.decodeImage(frame)
    assert.is_nil(rgba)
    assert.matches("expected 64", err)
  end)

  it("decodes a progress frame's preview and rejects one that does not fit its size", function()
    local rgba = string.rep("\1\2\3\255", 2 * 3)
    local frame = parse({ type = "progress", id = "j1", step = 1, totalSteps = 4,
      preview = { width = 2, height = 3, pngBase64 = "x", rgbaBase64 = base64.encode(rgba) } })
    assert.equals(rgba, protocol.decodePreview(frame.preview))
    local short = protocol.decodePreview({ width = 4, height = 4, rgbaBase64 = base64.encode(rgba) })
    assert.is_nil(short)
    local _, tooBig = protocol.decodePreview({ width = 4096, height = 1, rgbaBase64 = "" })
    assert.matches("out of range", tooBig)
    assert.is_nil(protocol.decodePreview(nil))
    assert.is_nil(protocol.decodePreview({ width = 1.5, height = 1, rgbaBase64 = "" }))
  end)

  it("normalises the engines frame", function()
    local frame = parse({ type = "engines", default = "torch", engines = {
      torch = { available = true, device = "cuda", features = { lora = true, backgroundRemoval = true }, schedulers = { "euler" } },
      mlx = { available = false, reason = "MLX needs Apple silicon" },
    } })
    assert.equals("torch", frame.default)
    assert.is_true(frame.engines.torch.features.lora)
    assert.same({ "euler" }, frame.engines.torch.schedulers)
    assert.is_false(frame.engines.mlx.available)
    assert.same({}, frame.engines.mlx.features)
    assert.equals("MLX needs Apple silicon", frame.engines.mlx.reason)
  end)

  it("accepts the GET /engines body nested under engines", function()
    local frame = parse({ type = "engines", engines = { default = "mlx", engines = { mlx = { available = true } } } })
    assert.equals("mlx", frame.default)
    assert.is_true(frame.engines.mlx.available)
  end)

  it("reports malformed frames instead of raising", function()
    local frame, err = protocol.parse(json, "{not json")
    assert.is_nil(frame)
    assert.matches("not valid JSON", err)
    frame, err = parse({ id = "j1" })
    assert.matches("no type", err)
    frame, err = parse({ type = "progress", id = "j1", step = "three", totalSteps = 20 })
    assert.is_nil(frame)
    assert.matches("'step'", err)
    frame, err = parse({ type = "accepted", id = "j1" })
    assert.matches("'requestId'", err)
  end)

  it("passes unknown frame types through for the caller to ignore", function()
    assert.same({ type = "hello", version = 2 }, parse({ type = "hello", version = 2 }))
  end)
end)
