local request = require("request")
local prefs = require("prefs")

local ENGINES = {
  type = "engines", default = "torch",
  engines = {
    torch = { available = true, device = "cuda", features = { lora = true, backgroundRemoval = true }, schedulers = {} },
    mlx = { available = true, device = "mps", features = { lora = false }, schedulers = {} },
    onnx = { available = false, reason = "onnxruntime is not installed", features = {}, schedulers = {} },
  },
}

local function values(overrides)
  local v = prefs.load({})
  v.prompt = "a knight"
  for k, x in pairs(overrides or {}) do v[k] = x end
  return v
end

describe("request.buildJob", function()
  it("checks candidates, strength and palette, and needs img2img for From canvas", function()
    local src = { width = 2, height = 1, rgbaBase64 = "AAAAAAAAAAA=" }
    local _, errs = request.buildJob(values({ count = 9 }))
    assert.matches("Candidates must be between 1 and 8", table.concat(errs, ";"))
    _, errs = request.buildJob(values({ source = src, strength = 101 }))
    assert.matches("Strength must be between 0 and 100", table.concat(errs, ";"))
    _, errs = request.buildJob(values({ pixelPreset = "Off", palette = { "#000000" } }))
    assert.matches("Use sprite palette needs the pixel%-art step", table.concat(errs, ";"))
    _, errs = request.buildJob(values({ engine = "mlx", source = src }), ENGINES)
    assert.matches("mlx engine cannot start from an image", table.concat(errs, ";"))
    -- From canvas with pixel art Off still brings the result back to the source's size
    local job = assert(request.buildJob(values({ pixelPreset = "Off", source = src, strength = 0, count = 1 })))
    assert.same({ width = 2, height = 1, colors = 0, fitMode = "stretch" }, job.pixel)
    assert.equals(0, job.strength)
    assert.is_nil(job.count)
  end)

  it("turns default dialog values into a job", function()
    local job = assert(request.buildJob(values()))
    assert.same({
      prompt = "a knight", width = 512, height = 512, steps = 15, guidanceScale = 7.5,
      removeBackground = false,
      pixel = { width = 64, height = 64, colors = 16, fitMode = "contain" },
    }, job)
  end)

  it("maps every field the server knows", function()
    local job = assert(request.buildJob(values({
      negativePrompt = " blurry ", engine = "torch", model = "tiny-sd", sizePreset = "Custom",
      width = 640, height = "384", steps = 30, guidanceScale = 5, seed = "7", lora = "pixel-art",
      loraStrength = 80, removeBackground = "BiRefNet (AI)", pixelPreset = "Custom",
      pixelWidth = 40, pixelHeight = 24, colors = 0, fitMode = "cover",
    }), ENGINES))
    assert.same({
      prompt = "a knight", negativePrompt = "blurry", engine = "torch", model = "tiny-sd",
      width = 640, height = 384, steps = 30, guidanceScale = 5, seed = 7,
      lora = { name = "pixel-art", strength = 0.8 }, removeBackground = "birefnet",
      pixel = { width = 40, height = 24, colors = 0, fitMode = "cover" },
    }, job)
  end)

  it("treats an empty seed and -1 as random (seed omitted)", function()
    assert.is_nil(request.buildJob(values({ seed = "" })).seed)
    assert.is_nil(request.buildJob(values({ seed = " -1 " })).seed)
    assert.equals(0, request.buildJob(values({ seed = "0" })).seed)
  end)

  it("omits server defaults and the pixel block when off", function()
    local job = request.buildJob(values({ engine = request.SERVER_DEFAULT, model = request.SERVER_DEFAULT,
      lora = "None", pixelPreset = "Off" }))
    assert.is_nil(job.engine)
    assert.is_nil(job.model)
    assert.is_nil(job.lora)
    assert.is_nil(job.pixel)
  end)

  it("validates sizes: multiples of 8 in 64..2048", function()
    local function sizeErrors(w, h)
      local _, errs = request.buildJob(values({ sizePreset = "Custom", width = w, height = h }))
      return errs and table.concat(errs, "; ") or ""
    end
    assert.equals("", sizeErrors(64, 2048))
    assert.matches("Width must be between 64 and 2048", sizeErrors(56, 512))
    assert.matches("Height must be between 64 and 2048", sizeErrors(512, 2056))
    assert.matches("Width must be a multiple of 8 %(got 100%)", sizeErrors(100, 512))
    assert.matches("Width must be a whole number", sizeErrors("abc", 512))
  end)

  it("validates steps, guidance, colors, seed and prompt", function()
    local function errs(o)
      local _, e = request.buildJob(values(o))
      return e and table.concat(e, "; ") or ""
    end
    assert.matches("Steps must be between 1 and 150", errs({ steps = 0 }))
    assert.matches("Steps must be between 1 and 150", errs({ steps = 151 }))
    assert.equals("", errs({ steps = 150 }))
    assert.matches("Colors must be between 0 and 256", errs({ colors = 257 }))
    assert.equals("", errs({ colors = 256 }))
    assert.matches("Guidance", errs({ guidanceScale = -1 }))
    assert.matches("Seed must be a whole number", errs({ seed = "abc" }))
    assert.matches("Prompt is empty", errs({ prompt = "   " }))
    assert.matches("Pixel width", errs({ pixelPreset = "Custom", pixelWidth = 0 }))
    assert.matches("Fit must be one of", errs({ fitMode = "squash" }))
  end)

  it("refuses what the chosen engine cannot do", function()
    local function errs(o)
      local _, e = request.buildJob(values(o), ENGINES)
      return e and table.concat(e, "; ") or ""
    end
    assert.matches("LoRA is not supported by the mlx engine", errs({ engine = "mlx", lora = "pixel-art" }))
    assert.matches("BiRefNet background removal is not available on the mlx engine",
      errs({ engine = "mlx", removeBackground = "BiRefNet (AI)" }))
    assert.matches("onnx is unavailable: onnxruntime is not installed", errs({ engine = "onnx (unavailable)" }))
    assert.matches("Unknown engine 'tpu'", errs({ engine = "tpu" }))
    assert.equals("", errs({ engine = "mlx", removeBackground = "Color key" }))
  end)
end)

describe("request.engineView", function()
  it("lists engines default-first and marks unavailable ones", function()
    local view = request.engineView(ENGINES, {})
    assert.same({ "torch", "mlx", "onnx (unavailable)" }, view.engineOptions)
    assert.equals("torch", view.engine)
    assert.is_true(view.generateEnabled)
    assert.is_true(view.loraEnabled)
    assert.same({ "Off", "Color key", "BiRefNet (AI)" }, view.backgroundOptions)
  end)

  it("disables LoRA with a hint on an engine without the lora feature", function()
    local view = request.engineView(ENGINES, { engine = "mlx", lora = "pixel-art", removeBackground = "BiRefNet (AI)" })
    assert.equals("mlx", view.engineName)
    assert.is_false(view.loraEnabled)
    assert.equals("LoRA is not supported by the mlx engine", view.loraHint)
    assert.equals("None", view.lora)
    assert.same({ "Off", "Color key" }, view.backgroundOptions)
    assert.equals("Off", view.removeBackground) -- BiRefNet no longer offered
  end)

  it("shows an unavailable engine's reason and disables Generate", function()
    local view = request.engineView(ENGINES, { engine = "onnx (unavailable)" })
    assert.equals("onnx (unavailable)", view.engine)
    assert.is_false(view.generateEnabled)
    assert.equals("onnx is unavailable: onnxruntime is not installed", view.engineHint)
  end)

  it("falls back to the server default for an engine that vanished", function()
    local view = request.engineView(ENGINES, { engine = "tpu" })
    assert.equals("torch", view.engine)
  end)

  it("waits for the engine list without blocking generation", function()
    local view = request.engineView(nil, { engine = "mlx" })
    assert.same({ request.SERVER_DEFAULT }, view.engineOptions)
    assert.is_true(view.generateEnabled)
    assert.same({ "Off", "Color key" }, view.backgroundOptions)
  end)

  it("fills model and LoRA choices from the frame and keeps the last used", function()
    local frame = {
      default = "torch",
      models = { "tiny-sd", { name = "tiny-sdxl" } },
      engines = { torch = { available = true, features = { lora = true }, loras = { "pixel-art" } } },
    }
    local view = request.engineView(frame, { model = "my-model", lora = "pixel-art" })
    assert.same({ request.SERVER_DEFAULT, "tiny-sd", "tiny-sdxl", "my-model" }, view.modelOptions)
    assert.equals("my-model", view.model)
    assert.same({ "None", "pixel-art" }, view.loraOptions)
    assert.equals("pixel-art", view.lora)
  end)

  it("accepts background removal announced as a list of methods", function()
    assert.is_true(request.hasBirefnet({ backgroundRemoval = { "color-key", "birefnet" } }))
    assert.is_true(request.hasBirefnet({ backgroundRemoval = { birefnet = true } }))
    assert.is_false(request.hasBirefnet({ backgroundRemoval = { "color-key" } }))
    assert.is_false(request.hasBirefnet({}))
  end)

  it("offers the size presets the artist expects", function()
    local sizes = request.sizeOptions()
    for _, label in ipairs({ "64x64", "128x128", "256x256", "512x512", "768x768", "1024x1024", "Custom" }) do
      local found = false
      for _, s in ipairs(sizes) do found = found or s == label end
      assert.is_true(found, label)
    end
    assert.equals("Off", request.pixelOptions()[1])
  end)
end)
