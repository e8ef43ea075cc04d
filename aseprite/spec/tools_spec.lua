-- tools/*.lua run under a plain lua5.4 (no Aseprite); the server's
-- integration test pipes real frames through them.
local base64 = require("base64")

local LUA = os.getenv("LUA") or "lua5.4"

local function run(script, input, args)
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, "wb"))
  f:write(input)
  f:close()
  local p = assert(io.popen(("%s tools/%s %s < %s; echo \"rc=$?\""):format(LUA, script, args or "", tmp)))
  local out = p:read("a")
  p:close()
  os.remove(tmp)
  local text, rc = out:match("^(.-)rc=(%d+)%s*$")
  return text, tonumber(rc)
end

describe("tools/decode_frame.lua", function()
  it("decodes a completed frame into its byte length", function()
    local rgba = string.rep("\255\128\0\255", 64 * 32)
    local frame = ('{"type":"completed","id":"j1","width":64,"height":32,"rgbaBase64":"%s"}\n'):format(base64.encode(rgba))
    local out, rc = run("decode_frame.lua", frame)
    assert.equals(0, rc)
    assert.equals("ok completed 64 32 8192\n", out)
  end)

  it("lists the candidates of a count > 1 job and refuses one that does not decode", function()
    local a, b = base64.encode(string.rep("\1", 16)), base64.encode(string.rep("\2", 16))
    local frame = ('{"type":"completed","id":"j","width":2,"height":2,"seed":7,"rgbaBase64":"%s","candidates":['
      .. '{"index":0,"seed":7,"width":2,"height":2,"rgbaBase64":"%s"},'
      .. '{"index":1,"seed":8,"width":2,"height":2,"rgbaBase64":"%s"}]}'):format(a, a, b)
    assert.equals("ok completed 2 2 16 candidates 2 7,8\n", (run("decode_frame.lua", frame)))
    local bad = frame:gsub('"seed":8,"width":2,"height":2,"rgbaBase64":"[^"]*"', '"seed":8,"width":2,"height":2,"rgbaBase64":"AAAA"')
    local out, rc = run("decode_frame.lua", bad)
    assert.equals(1, rc)
    assert.matches("^error 1 of 2 candidates do not decode", out)
  end)

  it("accepts other frames and reports failures with their code", function()
    assert.equals("ok progress 0 0 0\n", (run("decode_frame.lua", '{"type":"progress","id":"j","step":1,"totalSteps":4}')))
    assert.equals("ok failed 0 0 0 CUDA_OOM\n",
      (run("decode_frame.lua", '{"type":"failed","id":"j","code":"CUDA_OOM","message":"oom"}')))
  end)

  it("exits 1 with a reason for a bad frame", function()
    local out, rc = run("decode_frame.lua", '{"type":"completed","id":"j","width":2,"height":2,"rgbaBase64":"AAAA"}')
    assert.equals(1, rc)
    assert.matches("^error image is 3 bytes, expected 16", out)
    out, rc = run("decode_frame.lua", "nope")
    assert.equals(1, rc)
    assert.matches("^error frame is not valid JSON", out)
  end)
end)

describe("tools/submit_frame.lua", function()
  it("prints the submit frame the dialog would send", function()
    local out, rc = run("submit_frame.lua", '{"prompt":"a knight","pixelPreset":"32x32","seed":"7"}', "req-1")
    assert.equals(0, rc)
    local frame = require("dkjson").decode(out)
    assert.same({ type = "submit", requestId = "req-1", job = {
      prompt = "a knight", width = 512, height = 512, steps = 15, guidanceScale = 7.5, seed = 7,
      removeBackground = false, pixel = { width = 32, height = 32, colors = 16, fitMode = "contain" },
      idempotencyKey = "req-1",
    } }, frame)
  end)

  it("builds an img2img frame with mask, palette and candidates", function()
    local input = '{"prompt":"a knight","pixelPreset":"32x32","count":4,"strength":50,"palette":["#ff004d"],'
      .. '"source":{"width":2,"height":1,"rgbaBase64":"AQIDBAUGBwg=","maskBase64":"/////wAAAAA="}}'
    local out, rc = run("submit_frame.lua", input, "req-2")
    assert.equals(0, rc)
    local job = require("dkjson").decode(out).job
    assert.same({ width = 2, height = 1, rgba = "AQIDBAUGBwg=" }, job.inputImage)
    assert.same({ width = 2, height = 1, rgba = "/////wAAAAA=" }, job.mask)
    assert.equals(0.5, job.strength)
    assert.equals(4, job.count)
    assert.same({ width = 2, height = 1, fitMode = "stretch", palette = { "#ff004d" } }, job.pixel)
  end)

  it("refuses invalid values", function()
    local out, rc = run("submit_frame.lua", '{"prompt":"x","steps":"0"}')
    assert.equals(1, rc)
    assert.matches("Steps must be between 1 and 150", out)
  end)
end)
