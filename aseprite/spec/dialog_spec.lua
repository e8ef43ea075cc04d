local dialog = require("dialog")
local fakes = require("fakes")
local base64 = require("base64")

local ENGINES = {
  type = "engines", default = "torch",
  engines = {
    torch = { available = true, device = "cuda", features = { lora = true, backgroundRemoval = true } },
    mlx = { available = true, device = "mps", features = { lora = false } },
    onnx = { available = false, reason = "onnxruntime is not installed" },
  },
  loras = { "pixel-art" },
}

local function open(store)
  local api = fakes.newApi()
  local session = {}
  local controller = dialog.open(session, api, store or {})
  return controller, api, session
end

local function openConnected(store)
  local controller, api, session = open(store)
  local ws = api.WebSocket.last()
  ws:serverOpen()
  ws:serverSend(ENGINES)
  return controller, api, ws, session
end

describe("dialog", function()
  it("has every field and shows without blocking", function()
    local controller = open()
    local dlg = controller.dlg
    for _, id in ipairs({ "serverUrl", "prompt", "negativePrompt", "engine", "engineHint", "model", "lora",
      "loraStrength", "loraHint", "sizePreset", "width", "height", "steps", "guidanceScale", "seed",
      "pixelPreset", "pixelWidth", "pixelHeight", "colors", "fitMode", "removeBackground", "centre",
      "status", "progress", "generate", "cancel", "modelHint", "count", "fromCanvas", "strength", "canvasHint",
      "usePalette", "candidates" }) do
      assert.is_not_nil(dlg:widget(id), id)
    end
    assert.same({ wait = false }, dlg.showOptions)
    assert.equals("combobox", dlg:widget("engine").kind)
    assert.equals("slider", dlg:widget("loraStrength").kind)
    assert.equals("check", dlg:widget("centre").kind)
    assert.equals("slider", dlg:widget("strength").kind)
    assert.equals("slider", dlg:widget("count").kind)
    assert.equals("canvas", dlg:widget("candidates").kind)
    assert.equals("number", dlg:widget("steps").kind)
    assert.is_false(dlg:widget("cancel").enabled)
  end)

  it("asks for the engine list once connected and fills the engine choices", function()
    local controller, _, ws = openConnected()
    assert.same({ type = "engines" }, ws:sentFrames()[1])
    local dlg = controller.dlg
    assert.same({ "torch", "mlx", "onnx (unavailable)" }, dlg:widget("engine").options)
    assert.equals("torch", dlg:widget("engine").option)
    assert.equals("torch on cuda", dlg:widget("engineHint").text)
    assert.same({ "None", "pixel-art" }, dlg:widget("lora").options)
    assert.same({ "Off", "Color key", "BiRefNet (AI)" }, dlg:widget("removeBackground").options)
  end)

  it("disables LoRA with a hint when the engine lacks the lora feature", function()
    local controller = openConnected()
    local dlg = controller.dlg
    dlg:set("lora", "pixel-art")
    dlg:set("engine", "mlx")
    assert.is_false(dlg:widget("lora").enabled)
    assert.is_false(dlg:widget("loraStrength").enabled)
    assert.equals("None", dlg:widget("lora").option)
    assert.equals("LoRA is not supported by the mlx engine", dlg:widget("loraHint").text)
    assert.same({ "Off", "Color key" }, dlg:widget("removeBackground").options)
    dlg:set("engine", "torch")
    assert.is_true(dlg:widget("lora").enabled)
    assert.equals("", dlg:widget("loraHint").text)
  end)

  it("shows an unavailable engine with its reason and blocks Generate", function()
    local controller = openConnected()
    local dlg = controller.dlg
    dlg:set("engine", "onnx (unavailable)")
    assert.equals("onnx is unavailable: onnxruntime is not installed", dlg:widget("engineHint").text)
    assert.is_false(dlg:widget("generate").enabled)
  end)

  it("enables width/height only for a custom size", function()
    local controller = open()
    local dlg = controller.dlg
    assert.is_false(dlg:widget("width").enabled)
    dlg:set("sizePreset", "Custom")
    assert.is_true(dlg:widget("width").enabled)
    dlg:set("pixelPreset", "Off")
    assert.is_false(dlg:widget("colors").enabled)
    assert.is_false(dlg:widget("pixelWidth").enabled)
  end)

  it("Generate sends the submit frame built from the fields", function()
    local controller, _, ws = openConnected()
    local dlg = controller.dlg
    dlg:set("prompt", "a knight")
    dlg:set("negativePrompt", "blurry")
    dlg:set("lora", "pixel-art")
    dlg:set("loraStrength", 80)
    dlg:set("sizePreset", "Custom")
    dlg:set("width", 640)
    dlg:set("height", 384)
    dlg:set("steps", 20)
    dlg:set("seed", "7")
    dlg:set("pixelPreset", "32x32")
    dlg:set("colors", 16)
    dlg:set("removeBackground", "Color key")
    dlg:click("generate")
    local frame = ws:lastSent()
    local rid = frame.requestId
    assert.same({ type = "submit", requestId = rid, job = {
      prompt = "a knight", negativePrompt = "blurry", engine = "torch", width = 640, height = 384,
      steps = 20, guidanceScale = 7.5, seed = 7, lora = { name = "pixel-art", strength = 0.8 },
      removeBackground = "color-key", pixel = { width = 32, height = 32, colors = 16, fitMode = "contain" },
      idempotencyKey = rid, preview = true,
    } }, frame)
    assert.is_false(dlg:widget("generate").enabled)
    assert.is_true(dlg:widget("cancel").enabled)
  end)

  it("shows validation problems instead of sending", function()
    local controller, _, ws = openConnected()
    local dlg = controller.dlg
    dlg:set("prompt", "")
    dlg:click("generate")
    assert.matches("Prompt is empty", dlg:widget("status").text)
    assert.equals(1, #ws.sent) -- only the engines request
  end)

  it("shows progress, then places the result as a layer", function()
    local controller, api, ws = openConnected()
    local dlg = controller.dlg
    local sprite = api.Sprite(64, 64, api.ColorMode.RGB)
    dlg:set("prompt", "a knight")
    dlg:set("seed", "7")
    dlg:set("pixelPreset", "32x32")
    dlg:set("centre", true)
    dlg:click("generate")
    local rid = ws:lastSent().requestId
    ws:serverSend({ type = "accepted", requestId = rid, id = "job-9" })
    assert.matches("job%-9", dlg:widget("status").text)
    ws:serverSend({ type = "progress", id = "job-9", step = 10, totalSteps = 20 })
    assert.equals("[##########----------] 10/20", dlg:widget("progress").text)
    ws:serverSend({ type = "completed", id = "job-9", width = 32, height = 32,
      rgbaBase64 = base64.encode(string.rep("\0\0\0\255", 32 * 32)) })
    assert.equals(2, #sprite.layers)
    assert.equals("PixelAI: a knight 32x32 16c seed 7", sprite.layers[2].name)
    assert.same({ x = 16, y = 16 }, sprite.cels[1].position)
    assert.same({ "PixelAI: Generate" }, api.app.transactions)
    assert.matches("Done", dlg:widget("status").text)
    assert.equals("", dlg:widget("progress").text)
    assert.is_true(dlg:widget("generate").enabled)
    assert.is_false(dlg:widget("cancel").enabled)
  end)

  it("paints the newest step preview on the canvas, scaled up in whole pixels", function()
    local controller, _, ws = openConnected()
    local dlg = controller.dlg
    assert.equals("canvas", dlg:widget("preview").kind)
    assert.equals(0, #dlg:paint("preview").draws) -- nothing yet
    dlg:set("prompt", "a knight")
    dlg:click("generate")
    assert.is_true(ws:lastSent().job.preview)
    local rid = ws:lastSent().requestId
    ws:serverSend({ type = "accepted", requestId = rid, id = "job-p" })
    local repaints = dlg.repaints
    local red = string.rep("\255\0\0\255", 8 * 6)
    ws:serverSend({ type = "progress", id = "job-p", step = 2, totalSteps = 4,
      preview = { width = 8, height = 6, pngBase64 = "ignored", rgbaBase64 = base64.encode(red) } })
    assert.equals(repaints + 1, dlg.repaints)
    local draw = dlg:paint("preview").draws[1]
    assert.equals(red, draw.image.bytes)
    assert.is_false(draw.antialias)
    assert.same({ x = 0, y = 0, width = 8, height = 6 }, draw.src)
    -- 96 px widget: 12x for 8 px wide, centred vertically (6 * 12 = 72)
    assert.same({ x = 0, y = 12, width = 96, height = 72 }, draw.dst)

    -- a preview bigger than the widget is shrunk to fit
    ws:serverSend({ type = "progress", id = "job-p", step = 3, totalSteps = 4,
      preview = { width = 128, height = 128, rgbaBase64 = base64.encode(string.rep("\0\0\0\255", 128 * 128)) } })
    assert.same({ x = 0, y = 0, width = 96, height = 96 }, dlg:paint("preview").draws[1].dst)

    -- a broken preview is skipped: the last good one stays, the progress bar still moves
    ws:serverSend({ type = "progress", id = "job-p", step = 4, totalSteps = 4,
      preview = { width = 8, height = 8, rgbaBase64 = base64.encode("short") } })
    assert.equals("[####################] 4/4", dlg:widget("progress").text)
    assert.equals(128, dlg:paint("preview").draws[1].image.width)

    -- the next Generate starts with an empty preview
    ws:serverSend({ type = "completed", id = "job-p", width = 1, height = 1, rgbaBase64 = base64.encode("\0\0\0\255") })
    dlg:click("generate")
    assert.equals(0, #dlg:paint("preview").draws)
  end)

  it("Cancel sends cancel for the running job", function()
    local controller, _, ws = openConnected()
    local dlg = controller.dlg
    dlg:set("prompt", "a knight")
    dlg:click("generate")
    local rid = ws:lastSent().requestId
    ws:serverSend({ type = "accepted", requestId = rid, id = "job-5" })
    dlg:click("cancel")
    assert.same({ type = "cancel", id = "job-5" }, ws:lastSent())
    ws:serverSend({ type = "cancelled", id = "job-5" })
    assert.equals("Generation cancelled.", dlg:widget("status").text)
    assert.is_true(dlg:widget("generate").enabled)
  end)

  it("says plainly when the server is down", function()
    local controller, api = open()
    local dlg = controller.dlg
    dlg:set("prompt", "a knight")
    dlg:click("generate")
    for _ = 1, 200 do
      local ws = api.WebSocket.last()
      if ws.status == "connecting" then ws:serverError("Connection refused") end
      if controller.client.state == "offline" then break end
      api.Timer.advance(0.25)
    end
    assert.equals("PixelAI server not reachable at ws://127.0.0.1:5000/ws — start it with `make start` "
      .. "(Connection refused)", dlg:widget("status").text)
    assert.is_true(dlg:widget("generate").enabled)
  end)

  it("remembers settings between openings and uses the configured server", function()
    local store = {}
    local controller, _, session = open(store)
    local dlg = controller.dlg
    dlg:set("prompt", "a tree")
    dlg:set("steps", 25)
    dlg:set("serverUrl", "http://10.1.2.3:5001")
    dlg:click("generate")
    assert.equals("ws://10.1.2.3:5001/ws", session.client.url)
    dlg:close()
    assert.equals("a tree", store.last_prompt)
    assert.equals("25", store.last_steps)
    assert.equals("http://10.1.2.3:5001", store.serverUrl)

    local again = dialog.open(session, fakes.newApi(), store)
    assert.equals("a tree", again.dlg:widget("prompt").text)
    assert.equals("25", again.dlg:widget("steps").text)
    assert.equals("http://10.1.2.3:5001", again.dlg:widget("serverUrl").text)
  end)

  it("still places a result that arrives after the dialog was closed", function()
    local controller, api, ws = openConnected()
    controller.dlg:set("prompt", "late")
    controller.dlg:click("generate")
    local rid = ws:lastSent().requestId
    controller.dlg:close()
    ws:serverSend({ type = "accepted", requestId = rid, id = "j" })
    ws:serverSend({ type = "completed", id = "j", width = 8, height = 8, rgbaBase64 = base64.encode(string.rep("\1", 256)) })
    assert.equals("PixelAI: late 8x8 16c", api.app.sprite.layers[1].name)
    assert.equals(1, #api.app.sprite.layers)
  end)

  it("renders the text progress bar", function()
    assert.equals("[--------------------] 0/20", dialog.progressBar(0, 20))
    assert.equals("[####################] 20/20", dialog.progressBar(20, 20))
    assert.equals("[######--------------] 1/3", dialog.progressBar(1, 3))
    assert.equals("", dialog.progressBar(0, 0))
  end)
end)

describe("main.lua", function()
  it("registers the command and opens the dialog from it", function()
    local api = fakes.newApi()
    local commands = {}
    local plugin = { preferences = {}, newCommand = function(_, def) commands[#commands + 1] = def end }
    local env = setmetatable({
      app = api.app, Dialog = api.Dialog, Image = api.Image, Sprite = api.Sprite, Point = api.Point,
      ColorMode = api.ColorMode, WebSocket = api.WebSocket, WebSocketMessageType = api.WebSocketMessageType,
      Timer = api.Timer, json = api.json,
    }, { __index = _G })
    local chunk = assert(loadfile("extension/main.lua", "t", env))
    chunk()
    env.init(plugin)
    assert.equals(1, #commands)
    assert.equals("PixelAIGenerate", commands[1].id)
    assert.equals("PixelAI: Generate sprite…", commands[1].title)
    assert.equals("layer_new", commands[1].group)
    commands[1].onclick()
    local ws = api.WebSocket.last()
    assert.equals("ws://127.0.0.1:5000/ws", ws.url)
    env.exit(plugin)
    assert.equals(1, ws.closeCalls)
  end)

  it("explains which Aseprite is needed when the API is too old", function()
    local api = fakes.newApi()
    local commands = {}
    local plugin = { preferences = {}, newCommand = function(_, def) commands[#commands + 1] = def end }
    local env = setmetatable({ app = api.app, WebSocket = nil, Timer = nil, json = nil }, { __index = function(_, k)
      if k == "WebSocket" or k == "Timer" or k == "json" then return nil end
      return _G[k]
    end })
    assert(loadfile("extension/main.lua", "t", env))()
    env.init(plugin)
    commands[1].onclick()
    assert.matches("Aseprite 1%.3", api.app.alerts[1].text)
  end)
end)
