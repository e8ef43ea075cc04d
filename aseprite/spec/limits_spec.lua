-- The extension checks a job before sending it; its limits must be the
-- server's. They are read here from the server's OpenAPI spec, which
-- `npm run build` writes from the same types that validate POST /jobs.
local dkjson = require("dkjson")
local request = require("request")

local SPEC_PATH = "../src/generated/swagger.json"

local function openapi()
  local f = io.open(SPEC_PATH, "rb")
  assert(f, SPEC_PATH .. " is missing: run `npm run build` first (make test does)")
  local text = f:read("a")
  f:close()
  return assert(dkjson.decode(text))
end

local spec = openapi()
local schemas = spec.components.schemas
local job = schemas.GenerateJobRequest.properties
local pixel = schemas.PixelOptions.properties
local lora = schemas.LoraOptions.properties
local L = request.LIMITS

local function range(prop)
  return { min = prop.minimum, max = prop.maximum }
end

local function errorsFor(overrides)
  local values = {
    prompt = "a knight", sizePreset = "64x64", steps = 4, guidanceScale = 7,
    seed = "", pixelPreset = "Off",
  }
  for k, v in pairs(overrides) do values[k] = v end
  local _, errs = request.buildJob(values)
  return errs and table.concat(errs, "; ") or ""
end

describe("the extension's limits are the server's (OpenAPI spec)", function()
  it("covers every numeric field the dialog sends", function()
    assert.same(range(job.width), { min = L.size.min, max = L.size.max })
    assert.same(range(job.height), { min = L.size.min, max = L.size.max })
    assert.same(range(job.steps), L.steps)
    assert.same(range(job.guidanceScale), L.guidanceScale)
    assert.same(range(pixel.width), L.pixel)
    assert.same(range(pixel.height), L.pixel)
    assert.same(range(pixel.colors), L.colors)
    assert.same(job.prompt.maxLength, L.prompt.maxLength)
    assert.same(job.negativePrompt.maxLength, L.negativePrompt.maxLength)
  end)

  it("takes the size multiple from the spec's description of width", function()
    local multiple = tonumber((job.width.description or ""):match("multiple of (%d+)"))
    assert.is_not_nil(multiple, "width's description no longer states its multiple")
    assert.equals(multiple, L.size.multiple)
  end)

  it("sends a chosen seed only in the server's range; -1 (random) is the server's minimum, sent as no seed", function()
    assert.equals(-1, job.seed.minimum)
    assert.same({ min = 0, max = job.seed.maximum }, L.seed)
  end)

  it("offers img2img strengths (slider percent) exactly the server's range", function()
    assert.same({ min = job.strength.minimum * 100, max = job.strength.maximum * 100 }, L.strength)
  end)

  it("offers LoRA strengths (slider percent) the server accepts", function()
    assert.is_true(L.loraStrength.min / 100 >= lora.strength.minimum)
    assert.is_true(L.loraStrength.max / 100 <= lora.strength.maximum)
  end)

  it("accepts each limit and refuses one past it, as the server would", function()
    local maxSeed = tostring(math.tointeger(job.seed.maximum))
    assert.equals("", errorsFor({ seed = maxSeed }))
    assert.matches("Seed must be between 0 and " .. maxSeed, errorsFor({ seed = tostring(job.seed.maximum + 1) }))
    assert.matches("Seed must be between", errorsFor({ seed = "4294967295" }))
    local longest = string.rep("x", job.prompt.maxLength)
    assert.equals("", errorsFor({ prompt = longest }))
    assert.matches("Prompt is too long", errorsFor({ prompt = longest .. "x" }))
    assert.matches("Negative prompt is too long", errorsFor({ negativePrompt = longest .. "x" }))
  end)

  it("measures text as the server does: a character beyond U+FFFF counts twice", function()
    assert.equals(3, request.utf16Length("a\u{E9}b"))
    assert.equals(2, request.utf16Length("\u{1F5E1}"))
    local emoji = string.rep("\u{1F5E1}", job.prompt.maxLength // 2)
    assert.equals("", errorsFor({ prompt = emoji }))
    assert.matches("Prompt is too long", errorsFor({ prompt = emoji .. "x" }))
  end)
end)
