-- The "PixelAI: Generate sprite…" dialog: UI glue between the Dialog widgets,
-- the client (client.lua), validation (request.lua) and the canvas
-- (canvas.lua). Non-blocking: show{wait=false}; results arrive through the
-- client's events while the artist keeps drawing.

local Client = require("client")
local request = require("request")
local prefs = require("prefs")
local canvas = require("canvas")
local errors = require("errors")
local source = require("source")
local Placer = require("placer")
local base64 = require("base64")

local protocol = require("protocol")

local M = {}

local BAR_WIDTH = 20
-- On-screen size of the step preview; previews are 8–128 px, scaled to fit.
M.PREVIEW_SIZE = 96
-- Candidate thumbnails: up to 8 in a 4 x 2 grid of square cells.
M.THUMB_CELL = 48
M.THUMB_COLUMNS = 4

-- ASCII on purpose: Aseprite's default UI font has no block glyphs.
function M.progressBar(step, total)
  if not total or total <= 0 then return "" end
  step = math.max(0, math.min(step or 0, total))
  local filled = (step * BAR_WIDTH) // total
  return ("[%s%s] %d/%d"):format(("#"):rep(filled), ("-"):rep(BAR_WIDTH - filled), step, total)
end

local Controller = {}
Controller.__index = Controller

-- session: table kept by main.lua across dialog openings (holds the client,
-- so a job started before the dialog was closed still lands in the canvas).
-- api: Aseprite globals (Dialog, app, Image, Sprite, Point, ColorMode,
-- WebSocket, WebSocketMessageType, Timer, json). store: plugin.preferences.
-- opts.reopened: opened by the extension itself to show an error or
-- candidates; it then does not start a connection (the client may be in
-- the middle of giving up, and the artist did not ask for one).
function M.open(session, api, store, opts)
  local self = setmetatable({ session = session, api = api, store = store }, Controller)
  session.controller = self -- the newest window gets events the session's client and placer send
  session.placements = session.placements or {}
  self.settings = prefs.load(store)
  self.serverUrl = prefs.serverUrl(store)
  self:_build()
  self:_ensureClient()
  self:_ensurePlacer()
  self.engines = self.client.engines
  self:_applyEngineView()
  self:_applySizeEnabling()
  self:_setBusy(self.client:activeRequest() ~= nil)
  if session.candidates then self:_showCandidates() end
  self.dlg:show{ wait = false }
  if not (opts and opts.reopened) then self.client:requestEngines() end
  return self
end

function Controller:_build()
  local s = self.settings
  local dlg = self.api.Dialog{ title = "PixelAI", onclose = function() self:_onClose() end }
  self.dlg = dlg

  dlg:entry{ id = "serverUrl", label = "Server", text = self.serverUrl }
  dlg:entry{ id = "prompt", label = "Prompt", text = s.prompt, focus = true }
  dlg:entry{ id = "negativePrompt", label = "Negative", text = s.negativePrompt }

  dlg:separator{ text = "Engine" }
  dlg:combobox{ id = "engine", label = "Engine", option = request.SERVER_DEFAULT,
    options = { request.SERVER_DEFAULT }, onchange = function() self:_applyEngineView() end }
  dlg:label{ id = "engineHint", label = "", text = "" }
  dlg:combobox{ id = "model", label = "Model", option = request.SERVER_DEFAULT, options = { request.SERVER_DEFAULT },
    onchange = function()
      -- the artist's own pick (also "(server default)") beats the saved model
      if not self.applying then self.modelChosen = true end
      self:_applyEngineView()
    end }
  dlg:label{ id = "modelHint", label = "", text = "" }
  dlg:combobox{ id = "lora", label = "LoRA", option = request.NO_LORA, options = { request.NO_LORA } }
  dlg:slider{ id = "loraStrength", label = "LoRA strength %", min = request.LIMITS.loraStrength.min,
    max = request.LIMITS.loraStrength.max, value = s.loraStrength }
  dlg:label{ id = "loraHint", label = "", text = "" }

  dlg:separator{ text = "Generation" }
  dlg:combobox{ id = "sizePreset", label = "Base size", option = s.sizePreset, options = request.sizeOptions(),
    onchange = function() self:_applySizeEnabling() end }
  dlg:number{ id = "width", label = "Width", text = s.width, decimals = 0 }
  dlg:number{ id = "height", label = "Height", text = s.height, decimals = 0 }
  dlg:number{ id = "steps", label = "Steps", text = s.steps, decimals = 0 }
  dlg:number{ id = "guidanceScale", label = "Guidance", text = s.guidanceScale, decimals = 1 }
  dlg:entry{ id = "seed", label = "Seed (empty = random)", text = s.seed }
  dlg:slider{ id = "count", label = "Candidates", min = request.LIMITS.count.min, max = request.LIMITS.count.max,
    value = s.count }

  dlg:separator{ text = "Canvas" }
  dlg:check{ id = "fromCanvas", label = "Start from", text = "Canvas (selection or active cel)",
    selected = s.fromCanvas, onclick = function() self:_applyEngineView() end }
  dlg:slider{ id = "strength", label = "Strength %", min = request.LIMITS.strength.min,
    max = request.LIMITS.strength.max, value = s.strength }
  dlg:label{ id = "canvasHint", label = "", text = "" }
  dlg:check{ id = "usePalette", label = "Palette", text = "Use sprite palette", selected = s.usePalette }

  dlg:separator{ text = "Pixel art" }
  dlg:combobox{ id = "pixelPreset", label = "Sprite size", option = s.pixelPreset, options = request.pixelOptions(),
    onchange = function() self:_applySizeEnabling() end }
  dlg:number{ id = "pixelWidth", label = "Sprite width", text = s.pixelWidth, decimals = 0 }
  dlg:number{ id = "pixelHeight", label = "Sprite height", text = s.pixelHeight, decimals = 0 }
  dlg:number{ id = "colors", label = "Colors (0 = all)", text = s.colors, decimals = 0 }
  dlg:combobox{ id = "fitMode", label = "Fit", option = s.fitMode, options = request.FIT_MODES }
  dlg:combobox{ id = "removeBackground", label = "Background", option = s.removeBackground,
    options = { request.BACKGROUND[1].label } }
  dlg:check{ id = "centre", label = "Placement", text = "Centre on canvas", selected = s.centre }

  dlg:separator{}
  dlg:label{ id = "status", label = "Status", text = "" }
  dlg:label{ id = "progress", label = "", text = "" }
  -- Step previews need a canvas widget (Aseprite 1.3); without one jobs are
  -- submitted without `preview` and only the text bar shows.
  if dlg.canvas then
    dlg:canvas{ id = "preview", width = M.PREVIEW_SIZE, height = M.PREVIEW_SIZE,
      onpaint = function(ev) self:_paintPreview(ev.context) end }
    self.canPreview = true
    dlg:canvas{ id = "candidates", width = M.THUMB_CELL * M.THUMB_COLUMNS, height = M.THUMB_CELL * 2,
      onpaint = function(ev) self:_paintCandidates(ev.context) end,
      onmousedown = function(ev) self:_pickAt(ev.x, ev.y) end }
  end
  dlg:button{ id = "generate", text = "Generate", focus = false, onclick = function() self:generate() end }
  dlg:button{ id = "cancel", text = "Cancel", enabled = false, onclick = function() self:cancel() end }
  dlg:button{ id = "close", text = "Close", onclick = function() dlg:close() end }
end

-- One client per session and server URL; a changed URL replaces it.
function Controller:_ensureClient()
  local session, api = self.session, self.api
  local url, err = prefs.wsUrl(self.serverUrl)
  if not url then
    self:_status(err)
    url = prefs.wsUrl(prefs.DEFAULT_SERVER_URL)
  end
  if session.client and session.client.url ~= url then
    session.client:close()
    session.client = nil
  end
  if not session.client then
    session.client = Client.new{
      url = url, WebSocket = api.WebSocket, MessageType = api.WebSocketMessageType,
      Timer = api.Timer, json = api.json,
    }
  end
  self.client = session.client
  self.client.onEvent = function(event) self:_onEvent(event) end
end

-- One placer per session: images waiting for a locked document keep their
-- place in line when the window closes or reopens.
function Controller:_ensurePlacer()
  local session = self.session
  if not session.placer then
    session.placer = Placer.new{ api = self.api, Timer = self.api.Timer }
  end
  session.placer.onEvent = function(event)
    local current = session.controller or self
    current:_onPlacerEvent(event)
  end
end

---------------------------------------------------------------------------
-- enabling
---------------------------------------------------------------------------

function Controller:_modify(props)
  if self.closed then return end
  self.dlg:modify(props)
end

function Controller:_status(text)
  self:_modify{ id = "status", text = text or "" }
end

-- Setting a combobox's options or option from code can fire its onchange in
-- Aseprite, which calls back in here; the guard stops that loop, and options
-- are only replaced when they changed (replacing them resets the selection).
function Controller:_applyEngineView()
  if self.applying then return end
  self.applying = true
  local ok, err = pcall(self._applyEngineViewNow, self)
  self.applying = false
  if not ok then error(err, 0) end
end

function Controller:_setOptions(id, options)
  self.appliedOptions = self.appliedOptions or {}
  local key = table.concat(options, "\0")
  if self.appliedOptions[id] ~= key then
    self.appliedOptions[id] = key
    self:_modify{ id = id, options = options }
  end
end

function Controller:_applyEngineViewNow()
  local data = self.dlg.data
  local values = {
    engine = data.engine,
    model = (data.model ~= request.SERVER_DEFAULT or self.modelChosen) and data.model or self.settings.model,
    lora = data.lora ~= request.NO_LORA and data.lora or self.settings.lora,
    removeBackground = data.removeBackground ~= request.BACKGROUND[1].label and data.removeBackground
      or self.settings.removeBackground,
  }
  if values.engine == request.SERVER_DEFAULT and self.settings.engine ~= "" then
    values.engine = self.settings.engine
  end
  local view = request.engineView(self.engines, values)
  self.view = view
  self:_setOptions("engine", view.engineOptions)
  self:_modify{ id = "engine", option = view.engine }
  self:_modify{ id = "engineHint", text = view.engineHint }
  self:_setOptions("model", view.modelOptions)
  self:_modify{ id = "model", option = view.model }
  self:_setOptions("lora", view.loraOptions)
  self:_modify{ id = "lora", option = view.lora, enabled = view.loraEnabled }
  self:_modify{ id = "loraStrength", enabled = view.loraEnabled }
  self:_modify{ id = "loraHint", text = view.loraHint }
  self:_setOptions("removeBackground", view.backgroundOptions)
  self:_modify{ id = "removeBackground", option = view.removeBackground }
  self:_modify{ id = "modelHint", text = view.modelHint }
  self:_modify{ id = "fromCanvas", enabled = view.img2img }
  self:_modify{ id = "strength", enabled = view.img2img and data.fromCanvas == true }
  self:_modify{ id = "canvasHint", text = view.img2imgHint }
  self:_modify{ id = "generate", enabled = view.generateEnabled and not self.busy }
end

function Controller:_applySizeEnabling()
  local data = self.dlg.data
  local customSize = data.sizePreset == request.CUSTOM
  self:_modify{ id = "width", enabled = customSize }
  self:_modify{ id = "height", enabled = customSize }
  local pixelOn = data.pixelPreset ~= request.PIXEL_OFF
  local customPixel = data.pixelPreset == request.CUSTOM
  self:_modify{ id = "pixelWidth", enabled = customPixel }
  self:_modify{ id = "pixelHeight", enabled = customPixel }
  self:_modify{ id = "colors", enabled = pixelOn }
  self:_modify{ id = "fitMode", enabled = pixelOn }
end

function Controller:_setBusy(busy)
  self.busy = busy
  local canGenerate = not busy and (self.view == nil or self.view.generateEnabled)
  self:_modify{ id = "generate", enabled = canGenerate }
  self:_modify{ id = "cancel", enabled = busy }
end

---------------------------------------------------------------------------
-- actions
---------------------------------------------------------------------------

-- Dialog values in the shape prefs.save expects (engine by name, not label).
function Controller:_settingsFromData(data)
  local s = {}
  for key in pairs(prefs.DEFAULTS) do s[key] = data[key] end
  s.engine = request.engineNameFromLabel(data.engine) or ""
  if data.model == request.SERVER_DEFAULT then s.model = "" end
  return s
end

-- From canvas and Use sprite palette read the sprite now (at Generate),
-- so the job starts from what the artist sees. Returns the request values
-- and where the result goes, or nil and a reason.
function Controller:_canvasValues(data)
  local values, placement = {}, {}
  for k, v in pairs(data) do values[k] = v end
  if data.fromCanvas and (self.view == nil or self.view.img2img) then
    local src, why = source.fromCanvas(self.api)
    if not src then return nil, why end
    values.source = { width = src.width, height = src.height, rgbaBase64 = base64.encode(src.rgba),
      maskBase64 = src.mask and base64.encode(src.mask) }
    placement = { bounds = src.bounds, sprite = src.sprite, frameNumber = src.frameNumber }
  end
  if data.usePalette then
    local palette, why = source.spritePalette(self.api)
    if not palette then return nil, why end
    values.palette = palette
  end
  return values, placement
end

function Controller:generate()
  local data = self.dlg.data
  prefs.save(self.store, self:_settingsFromData(data))
  self.settings = prefs.load(self.store)
  if data.serverUrl ~= self.serverUrl then
    self.serverUrl = data.serverUrl
    prefs.setServerUrl(self.store, data.serverUrl)
    self:_ensureClient()
    self.engines = nil
    self.client:requestEngines()
  end

  local values, placement = self:_canvasValues(data)
  if not values then
    self:_status(placement)
    return nil
  end
  local job, problems, notes = request.buildJob(values, self.engines)
  if not job then
    self:_status("Check: " .. table.concat(problems, "; "))
    return nil
  end
  if self.canPreview then job.preview = true end
  self.job = job
  local old = self.session.candidates
  if old then self.session.placements[old.requestId] = nil end
  self.session.candidates, self.thumbs = nil, nil
  self:_setPreview(nil)
  self:_setBusy(true)
  self:_modify{ id = "progress", text = "" }
  self:_status("Sending…")
  -- what the job does differently from what was asked stays in view (the
  -- status line moves on with the job)
  self:_modify{ id = "canvasHint", text = (#notes > 0) and ("Note: " .. table.concat(notes, "; ")) or
    (self.view and self.view.img2imgHint or "") }
  self.requestId = self.client:submit(job)
  self.session.placements[self.requestId] = placement
  return self.requestId
end

function Controller:cancel()
  local req = self.client:activeRequest()
  if req and self.client:cancel(req.requestId) then
    self:_status("Cancelling…")
  end
end

function Controller:_onClose()
  if self.closed then return end
  local ok, data = pcall(function() return self.dlg.data end)
  if ok and data then
    local s = self:_settingsFromData(data)
    prefs.save(self.store, s)
  end
  self.closed = true
end

---------------------------------------------------------------------------
-- client events
---------------------------------------------------------------------------

local STATE_TEXT = {
  connecting = "Connecting…",
  ready = "Connected",
  waiting = "Reconnecting…",
}

-- The text for the status line, or, when the window is closed, a reopened
-- window showing it (an error after closing must not vanish).
function Controller:_report(text, isError)
  if not self.closed then
    self:_status(text)
  elseif isError and self.session.controller == self then
    local again = M.open(self.session, self.api, self.store, { reopened = true })
    again:_status(text)
  end
end

-- What canvas.place needs for one image of a finished request.
function Controller:_resultFor(requestId, image)
  local req = self.client:request(requestId)
  local job = req and req.job or self.job or {}
  local placement = self.session.placements[requestId] or {}
  local data = (not self.closed) and self.dlg.data or {}
  return {
    rgba = image.rgba, width = image.width, height = image.height,
    prompt = job.prompt, colors = job.pixel and job.pixel.colors, seed = image.seed,
    centre = data.centre == true,
    bounds = placement.bounds, sprite = placement.sprite, frameNumber = placement.frameNumber,
  }
end

function Controller:_place(event)
  if event.candidates then
    self.session.candidates = { requestId = event.requestId, list = event.candidates }
    if self.closed and self.session.controller == self then
      M.open(self.session, self.api, self.store, { reopened = true }) -- the artist has a choice to make
    else
      self:_showCandidates()
    end
    return
  end
  self.session.placer:add(self:_resultFor(event.requestId, event))
  self.session.placements[event.requestId] = nil
end

function Controller:_onPlacerEvent(event)
  if event.kind == "placed" then
    local placed = event.placed
    self:_report((placed.newSprite and "Done — new sprite: " or "Done — layer: ") .. placed.layer.name)
  elseif event.kind == "busy" then
    self:_report(errors.describe(errors.CLIENT.DOCUMENT_BUSY))
  else
    self:_report("Could not place the image: " .. tostring(event.reason), true)
  end
end

---------------------------------------------------------------------------
-- candidates
---------------------------------------------------------------------------

function Controller:_showCandidates()
  local c = self.session.candidates
  if not c or self.closed then return end
  self.thumbs = {}
  for i, cand in ipairs(c.list) do
    self.thumbs[i] = canvas.makeImage(self.api, cand.rgba, cand.width, cand.height)
  end
  self:_status(("%d candidates: click one to add it as a layer"):format(#c.list))
  if self.canPreview then self.dlg:repaint() end
end

-- A count > 1 job's step previews, one per candidate, fill the thumbnail
-- grid while it runs (not clickable: nothing is finished yet).
function Controller:_showCandidatePreviews(previews)
  if not self.canPreview or self.closed or self.session.candidates then return end
  local thumbs = {}
  for i, preview in ipairs(previews) do
    local rgba = protocol.decodePreview(preview)
    thumbs[i] = rgba and canvas.makeImage(self.api, rgba, preview.width, preview.height) or false
  end
  self.thumbs = thumbs
  self.dlg:repaint()
end

-- Cell of candidate i (1-based) in the thumbnail grid.
local function cellOf(i)
  local col = (i - 1) % M.THUMB_COLUMNS
  local row = (i - 1) // M.THUMB_COLUMNS
  return col * M.THUMB_CELL, row * M.THUMB_CELL
end

function Controller:_paintCandidates(gc)
  if not self.thumbs then return end
  local Rectangle = self.api.Rectangle
  local inner = M.THUMB_CELL - 4
  gc.antialias = false
  for i, image in ipairs(self.thumbs) do
    if image then
      local scale = math.min(inner / image.width, inner / image.height)
      if scale >= 1 then scale = math.floor(scale) end
      local w = math.max(1, math.floor(image.width * scale))
      local h = math.max(1, math.floor(image.height * scale))
      local x, y = cellOf(i)
      gc:drawImage(image, Rectangle(0, 0, image.width, image.height),
        Rectangle(x + (M.THUMB_CELL - w) // 2, y + (M.THUMB_CELL - h) // 2, w, h))
    end
  end
end

-- Adds candidate `index` (1-based) as a new layer, where the job's result
-- would have gone (the selection's bounds for From canvas).
function Controller:pickCandidate(index)
  local c = self.session.candidates
  local cand = c and c.list[index]
  if not cand then return false end
  self.session.placer:add(self:_resultFor(c.requestId, cand))
  return true
end

function Controller:_pickAt(x, y)
  local col, row = x // M.THUMB_CELL, y // M.THUMB_CELL
  if col < 0 or col >= M.THUMB_COLUMNS or row < 0 or row > 1 then return end
  self:pickCandidate(row * M.THUMB_COLUMNS + col + 1)
end

function Controller:_setPreview(image)
  if not self.canPreview or self.closed then return end
  self.previewImage = image
  self.dlg:repaint()
end

-- A progress frame's preview (raw RGBA, see protocol.decodePreview) becomes
-- the image the canvas paints; a bad one is skipped, the job goes on.
function Controller:_showPreview(preview)
  if not self.canPreview then return end
  local rgba = protocol.decodePreview(preview)
  local image = rgba and canvas.makeImage(self.api, rgba, preview.width, preview.height)
  if image then self:_setPreview(image) end
end

-- Whole-number upscaling (crisp pixels, like the sprite it turns into),
-- shrinking only what is larger than the widget; centred.
function Controller:_paintPreview(gc)
  local image = self.previewImage
  if not image then return end
  local scale = math.min(M.PREVIEW_SIZE / image.width, M.PREVIEW_SIZE / image.height)
  if scale >= 1 then scale = math.floor(scale) end
  local w = math.max(1, math.floor(image.width * scale))
  local h = math.max(1, math.floor(image.height * scale))
  local Rectangle = self.api.Rectangle
  gc.antialias = false
  gc:drawImage(image, Rectangle(0, 0, image.width, image.height),
    Rectangle((M.PREVIEW_SIZE - w) // 2, (M.PREVIEW_SIZE - h) // 2, w, h))
end

function Controller:_onEvent(event)
  local kind = event.kind
  if kind == "state" then
    if event.state == "offline" then
      self:_status(event.message)
    elseif not self.busy or event.state ~= "ready" then
      self:_status(event.message or STATE_TEXT[event.state])
    end
  elseif kind == "engines" then
    self.engines = event.engines
    self:_applyEngineView()
  elseif kind == "submitted" then
    self:_status("Sent, waiting for the server…")
  elseif kind == "accepted" then
    self:_status("Queued (job " .. tostring(event.id) .. ")")
  elseif kind == "progress" then
    self:_status("Generating…")
    self:_modify{ id = "progress", text = M.progressBar(event.step, event.totalSteps) }
    if event.preview then self:_showPreview(event.preview) end
    if type(event.previews) == "table" and #event.previews > 1 then self:_showCandidatePreviews(event.previews) end
  elseif kind == "completed" then
    self:_setBusy(self.client:activeRequest() ~= nil)
    self:_modify{ id = "progress", text = "" }
    self:_place(event)
  elseif kind == "failed" or kind == "cancelled" then
    self:_setBusy(self.client:activeRequest() ~= nil)
    self:_modify{ id = "progress", text = "" }
    self.session.placements[event.requestId or ""] = nil
    self:_report(event.message or errors.describe(event.code), kind == "failed")
  elseif kind == "unreachable" then
    self:_setBusy(false)
    self:_status(event.message)
  elseif kind == "error" then
    self:_status(event.message)
  end
end

return M
