-- The dialog against the corrected fakes: From canvas, sprite palette,
-- strength, candidates, a busy document, errors after closing, refused
-- network access, and the engine-aware pickers.
local dialog = require("dialog")
local fakes = require("fakes")
local base64 = require("base64")

local ENGINES = {
  type = "engines", default = "torch",
  engines = {
    torch = { available = true, device = "cuda", features = { lora = true, img2img = true, inpaint = true } },
    mlx = { available = true, device = "mps", features = { lora = false, img2img = true, inpaint = false } },
    old = { available = true, features = {} },
  },
  models = { "tiny-sd" },
}

local function openConnected(engines)
  local api = fakes.newApi()
  local session = {}
  local controller = dialog.open(session, api, {})
  local ws = api.WebSocket.last()
  ws:serverOpen()
  ws:serverSend(engines or ENGINES)
  return controller, api, ws, session
end

local function pixel(r, g, b, a) return string.char(r, g, b, a) end

-- A 16x16 RGB sprite whose active cel is a 4x4 red square at (2, 3).
local function spriteWithCel(api)
  local sprite = api.Sprite(16, 16, api.ColorMode.RGB)
  local image = api.Image(4, 4, api.ColorMode.RGB)
  image.bytes = pixel(255, 0, 0, 255):rep(16)
  api.app.cel = sprite:newCel(sprite.layers[1], 1, image, api.Point(2, 3))
  return sprite
end

local function accept(ws)
  local frame = ws:lastSent()
  ws:serverSend({ type = "accepted", requestId = frame.requestId, id = "job-1" })
  return frame
end

local function rgbaOf(w, h, byte)
  return base64.encode(string.char(byte, byte, byte, 255):rep(w * h))
end

describe("dialog, From canvas", function()
  it("sends the active cel as raw RGBA with strength, and places the result over it", function()
    local controller, api, ws = openConnected()
    local dlg = controller.dlg
    local sprite = spriteWithCel(api)
    dlg:set("prompt", "a knight")
    dlg:set("fromCanvas", true)
    dlg:set("strength", 40)
    dlg:click("generate")
    local frame = accept(ws)
    local job = frame.job
    assert.same({ width = 4, height = 4, rgba = base64.encode(pixel(255, 0, 0, 255):rep(16)) }, job.inputImage)
    assert.equals(0.4, job.strength)
    assert.is_nil(job.mask)
    assert.same({ width = 4, height = 4, colors = 16, fitMode = "stretch" }, job.pixel)
    ws:serverSend({ type = "completed", id = "job-1", width = 4, height = 4, rgbaBase64 = rgbaOf(4, 4, 9) })
    assert.equals(2, #sprite.layers)
    assert.same({ x = 2, y = 3 }, sprite.cels[#sprite.cels].position)
  end)

  it("sends the selection's bounds and mask; the result lands at the selection", function()
    local controller, api, ws = openConnected()
    local dlg = controller.dlg
    local sprite = spriteWithCel(api)
    -- a 3x2 selection at (4, 5), its top-left pixel not selected
    local pixels = { ["5,5"] = true, ["6,5"] = true, ["4,6"] = true, ["5,6"] = true, ["6,6"] = true }
    sprite.selection = fakes.newSelection(fakes.Rectangle(4, 5, 3, 2), pixels)
    dlg:set("prompt", "a knight")
    dlg:set("fromCanvas", true)
    dlg:click("generate")
    local job = accept(ws).job
    local red, clear = pixel(255, 0, 0, 255), pixel(0, 0, 0, 0)
    -- the cel covers x 2..5, y 3..6: the selection's column 6 is outside it
    local expected = red .. red .. clear .. red .. red .. clear
    assert.same({ width = 3, height = 2, rgba = base64.encode(expected) }, job.inputImage)
    local white = pixel(255, 255, 255, 255)
    assert.same({ width = 3, height = 2, rgba = base64.encode(clear .. white .. white .. white .. white .. white) },
      job.mask)
    ws:serverSend({ type = "completed", id = "job-1", width = 3, height = 2, rgbaBase64 = rgbaOf(3, 2, 7) })
    assert.same({ x = 4, y = 5 }, sprite.cels[#sprite.cels].position)
  end)

  it("leaves the mask out, and says so, when the engine cannot inpaint", function()
    local controller, api, ws = openConnected()
    local dlg = controller.dlg
    local sprite = spriteWithCel(api)
    sprite.selection = fakes.newSelection(fakes.Rectangle(2, 3, 2, 2))
    dlg:set("engine", "mlx")
    dlg:set("prompt", "a knight")
    dlg:set("fromCanvas", true)
    dlg:click("generate")
    local job = accept(ws).job
    assert.is_nil(job.mask)
    assert.equals(2, job.inputImage.width)
    assert.matches("cannot repaint only the selection", dlg:widget("canvasHint").text)
  end)

  it("is disabled with a reason on an engine without img2img", function()
    local controller = openConnected()
    local dlg = controller.dlg
    assert.is_true(dlg:widget("fromCanvas").enabled)
    assert.is_false(dlg:widget("strength").enabled) -- until From canvas is ticked
    dlg:set("fromCanvas", true)
    assert.is_true(dlg:widget("strength").enabled)
    dlg:set("engine", "old")
    assert.is_false(dlg:widget("fromCanvas").enabled)
    assert.is_false(dlg:widget("strength").enabled)
    assert.equals("The old engine cannot start from an image", dlg:widget("canvasHint").text)
  end)

  it("explains what is missing instead of sending", function()
    local controller, api, ws = openConnected()
    local dlg = controller.dlg
    api.Sprite(8, 8, api.ColorMode.INDEXED)
    dlg:set("prompt", "a knight")
    dlg:set("fromCanvas", true)
    dlg:click("generate")
    assert.equals("From canvas needs an RGB sprite (Sprite > Color Mode > RGB Color).", dlg:widget("status").text)
    assert.equals(1, #ws.sent) -- only the engines request
  end)
end)

describe("dialog, palette and candidates", function()
  it("sends the sprite's palette instead of a colour count", function()
    local controller, api, ws = openConnected()
    local dlg = controller.dlg
    local sprite = api.Sprite(8, 8, api.ColorMode.RGB)
    sprite.palettes[1] = fakes.newPalette({ { 0, 0, 0, 0 }, { 255, 0, 77 }, { 16, 32, 48 }, { 255, 0, 77 } })
    dlg:set("prompt", "a knight")
    dlg:set("usePalette", true)
    dlg:click("generate")
    local job = ws:lastSent().job
    assert.same({ "#ff004d", "#102030" }, job.pixel.palette)
    assert.is_nil(job.pixel.colors)
  end)

  it("asks for count candidates, shows them as thumbnails and places the clicked one at the selection", function()
    local controller, api, ws = openConnected()
    local dlg = controller.dlg
    local sprite = spriteWithCel(api)
    sprite.selection = fakes.newSelection(fakes.Rectangle(8, 8, 4, 4))
    dlg:set("prompt", "a knight")
    dlg:set("seed", "7")
    dlg:set("count", 3)
    dlg:set("fromCanvas", true)
    dlg:click("generate")
    assert.equals(3, accept(ws).job.count)
    local candidates = {}
    for i = 0, 2 do
      candidates[i + 1] = { index = i, seed = 7 + i, width = 4, height = 4, rgbaBase64 = rgbaOf(4, 4, 10 * i) }
    end
    -- while it runs, each candidate's step preview fills its cell; clicks do nothing yet
    local function preview(byte) return { width = 4, height = 4, rgbaBase64 = rgbaOf(4, 4, byte) } end
    ws:serverSend({ type = "progress", id = "job-1", step = 1, totalSteps = 2, preview = preview(0),
      previews = { preview(0), preview(1), { width = 4, height = 4, rgbaBase64 = "bad" } } })
    assert.equals(2, #dlg:paint("candidates").draws)
    dlg:mouseDown("candidates", 5, 5)
    assert.equals(1, #sprite.layers)
    ws:serverSend({ type = "completed", id = "job-1", width = 4, height = 4, seed = 7,
      rgbaBase64 = candidates[1].rgbaBase64, candidates = candidates })
    assert.equals(1, #sprite.layers) -- nothing placed until the artist picks
    assert.matches("3 candidates", dlg:widget("status").text)
    local draws = dlg:paint("candidates").draws
    assert.equals(3, #draws)
    -- 4 px thumbnails in 48 px cells: scaled x11 (44 px), centred
    assert.same({ x = 48 + 2, y = 2, width = 44, height = 44 }, draws[2].dst)

    dlg:mouseDown("candidates", 48 + 10, 20) -- the second cell
    assert.equals(2, #sprite.layers)
    local cel = sprite.cels[#sprite.cels]
    assert.same({ x = 8, y = 8 }, cel.position)
    assert.equals(string.char(10, 10, 10, 255):rep(16), cel.image.bytes)
    assert.equals("PixelAI: a knight 4x4 16c seed 8", sprite.layers[2].name)
    dlg:mouseDown("candidates", 150, 80) -- an empty cell: nothing
    assert.equals(2, #sprite.layers)
  end)

  it("reopens the window with the candidates when they arrive after it was closed", function()
    local controller, api, ws, session = openConnected()
    api.Sprite(16, 16, api.ColorMode.RGB)
    controller.dlg:set("prompt", "a knight")
    controller.dlg:set("count", 2)
    controller.dlg:click("generate")
    accept(ws)
    controller.dlg:close()
    local before = #fakes.Dialog.instances
    ws:serverSend({ type = "completed", id = "job-1", width = 2, height = 2, rgbaBase64 = rgbaOf(2, 2, 1),
      candidates = { { index = 0, seed = 1, width = 2, height = 2, rgbaBase64 = rgbaOf(2, 2, 1) },
        { index = 1, seed = 2, width = 2, height = 2, rgbaBase64 = rgbaOf(2, 2, 2) } } })
    assert.equals(before + 1, #fakes.Dialog.instances)
    local again = session.controller
    assert.are_not.equal(controller, again)
    assert.is_true(again.dlg.shown)
    assert.equals(2, #again.dlg:paint("candidates").draws)
  end)
end)

describe("dialog survives the real editor", function()
  it("does not lose the image when the document is locked: retried on the next tick", function()
    local controller, api, ws = openConnected()
    local dlg = controller.dlg
    local sprite = api.Sprite(16, 16, api.ColorMode.RGB)
    dlg:set("prompt", "a knight")
    dlg:click("generate")
    accept(ws)
    api.app.lockFailures = 2
    ws:serverSend({ type = "completed", id = "job-1", width = 8, height = 8, rgbaBase64 = rgbaOf(8, 8, 3) })
    assert.equals(1, #sprite.layers)
    assert.matches("busy", dlg:widget("status").text)
    assert.is_true(dlg:widget("generate").enabled) -- the job is over; only placing waits
    api.Timer.advance(0.25)
    assert.equals(1, #sprite.layers)
    api.Timer.advance(0.25)
    assert.equals(2, #sprite.layers)
    assert.matches("^Done", dlg:widget("status").text)
  end)

  it("reopens the window with the error when a job fails after it was closed", function()
    local controller, _, ws, session = openConnected()
    controller.dlg:set("prompt", "a knight")
    controller.dlg:click("generate")
    accept(ws)
    controller.dlg:close()
    ws:serverSend({ type = "failed", id = "job-1", code = "CUDA_OOM", message = "tried to allocate 2 GiB" })
    local again = session.controller
    assert.are_not.equal(controller, again)
    assert.is_true(again.dlg.shown)
    assert.matches("GPU ran out of memory", again.dlg:widget("status").text)
    assert.matches("2 GiB", again.dlg:widget("status").text)
  end)

  it("reopens once with the lost-connection message when the server goes away after closing", function()
    local api = fakes.newApi()
    local session = {}
    local controller = dialog.open(session, api, {})
    local ws = api.WebSocket.last()
    ws:serverOpen()
    controller.dlg:set("prompt", "a knight")
    controller.dlg:click("generate")
    accept(ws)
    controller.dlg:close()
    ws:serverClose()
    for _ = 1, 200 do
      if ws.status == "connecting" then ws:serverError("Connection refused") end
      if controller.client.state == "offline" then break end
      api.Timer.advance(0.25)
    end
    local again = session.controller
    assert.are_not.equal(controller, again)
    assert.matches("reachable", again.dlg:widget("status").text)
    assert.equals("offline", again.client.state) -- reopening did not start another round of retries
    assert.is_false(api.Timer.running())
  end)

  it("says clearly that network access was refused", function()
    local api = fakes.newApi()
    api.WebSocket.security.answer = "deny"
    local controller = dialog.open({}, api, {})
    assert.matches("not allowed to connect", controller.dlg:widget("status").text)
    assert.equals(1, api.WebSocket.security.prompts)
    api.Timer.advance(60)
    assert.equals(1, api.WebSocket.security.prompts)
  end)

  it("asks for permission once while the server stays down", function()
    local api = fakes.newApi()
    local controller = dialog.open({}, api, {})
    controller.dlg:set("prompt", "a knight")
    controller.dlg:click("generate")
    for _ = 1, 200 do
      local ws = api.WebSocket.last()
      if ws.status == "connecting" then ws:serverError("Connection refused") end
      if controller.client.state == "offline" then break end
      api.Timer.advance(0.25)
    end
    assert.equals(1, api.WebSocket.security.prompts)
    assert.matches("Connection refused", controller.dlg:widget("status").text)
  end)

  it("sends the integer part of a whole-number field, as Aseprite reads it", function()
    local controller, _, ws = openConnected()
    controller.dlg:set("prompt", "a knight")
    controller.dlg:set("steps", "20.7")
    controller.dlg:click("generate")
    assert.equals(20, ws:lastSent().job.steps)
  end)

  it("shows per-engine model availability when the server gives it, and the MLX gap when not", function()
    local engines = {
      type = "engines", default = "torch",
      engines = {
        torch = { available = true, features = {},
          models = { { name = "tiny-sd" }, { name = "big", runnable = false, reason = "not downloaded" } } },
        mlx = { available = true, features = {} },
      },
      models = { "tiny-sd", "big" },
    }
    local controller = openConnected(engines)
    local dlg = controller.dlg
    dlg:set("model", "big")
    assert.equals("big cannot run on torch now: not downloaded", dlg:widget("modelHint").text)
    assert.is_false(dlg:widget("generate").enabled)
    dlg:set("model", "tiny-sd")
    assert.is_true(dlg:widget("generate").enabled)
    dlg:set("engine", "mlx")
    assert.matches("MLX runs converted models only", dlg:widget("modelHint").text)
  end)
end)
