-- Dialog values -> job table for the submit frame, plus what the dialog
-- should enable for the chosen engine. Pure: the dialog module applies the
-- result with Dialog:modify, and specs check it without any UI.

local M = {}

-- Limits are the server's POST /jobs limits (its OpenAPI spec, /openapi.json):
-- checking here gives the artist the reason before a round trip.
-- spec/limits_spec.lua reads the spec and fails when one of these drifts.
M.LIMITS = {
  prompt = { maxLength = 2000 },
  negativePrompt = { maxLength = 2000 },
  size = { min = 64, max = 2048, multiple = 8 },
  steps = { min = 1, max = 150 },
  guidanceScale = { min = 0, max = 30 },
  colors = { min = 0, max = 256 },
  pixel = { min = 1, max = 2048 },
  -- -1 (random) is sent as "no seed"; a chosen seed is 0..2^31-1.
  seed = { min = 0, max = 2147483647 },
  -- The slider is in percent and offers 0..200 % of the server's -4..4.
  loraStrength = { min = 0, max = 200 },
  -- img2img strength as a percent slider (the server's 0..1).
  strength = { min = 0, max = 100 },
  -- candidates per job
  count = { min = 1, max = 8 },
}

M.CUSTOM = "Custom"
M.SERVER_DEFAULT = "(server default)"
M.NO_LORA = "None"
M.PIXEL_OFF = "Off"
M.UNAVAILABLE_SUFFIX = " (unavailable)"

-- Base (generation) resolutions. The small ones suit the tiny test models
-- and quick drafts; SD 1.5 works best at 512, SDXL at 1024.
M.SIZE_PRESETS = {
  { label = "64x64", width = 64, height = 64 },
  { label = "128x128", width = 128, height = 128 },
  { label = "256x256", width = 256, height = 256 },
  { label = "512x512", width = 512, height = 512 },
  { label = "768x768", width = 768, height = 768 },
  { label = "1024x1024", width = 1024, height = 1024 },
  { label = "1024x768", width = 1024, height = 768 },
  { label = "768x1024", width = 768, height = 1024 },
}

-- Final sprite sizes after the pixel-art post-process.
M.PIXEL_PRESETS = {
  { label = "16x16", width = 16, height = 16 },
  { label = "32x32", width = 32, height = 32 },
  { label = "48x48", width = 48, height = 48 },
  { label = "64x64", width = 64, height = 64 },
  { label = "96x96", width = 96, height = 96 },
  { label = "128x128", width = 128, height = 128 },
  { label = "256x256", width = 256, height = 256 },
}

M.FIT_MODES = { "contain", "cover", "stretch" }

-- Background removal choices: label -> wire value.
M.BACKGROUND = {
  { label = "Off", value = false },
  { label = "Color key", value = "color-key" },
  { label = "BiRefNet (AI)", value = "birefnet", feature = true },
}

local function labels(list)
  local out = {}
  for i, item in ipairs(list) do out[i] = item.label end
  return out
end

function M.sizeOptions()
  local out = labels(M.SIZE_PRESETS)
  out[#out + 1] = M.CUSTOM
  return out
end

function M.pixelOptions()
  local out = { M.PIXEL_OFF }
  for _, label in ipairs(labels(M.PIXEL_PRESETS)) do out[#out + 1] = label end
  out[#out + 1] = M.CUSTOM
  return out
end

local function findPreset(list, label)
  for _, item in ipairs(list) do
    if item.label == label then return item end
  end
  return nil
end
M.findSizePreset = function(label) return findPreset(M.SIZE_PRESETS, label) end
M.findPixelPreset = function(label) return findPreset(M.PIXEL_PRESETS, label) end

---------------------------------------------------------------------------
-- Engines
---------------------------------------------------------------------------

-- The engines frame may announce background removal as a boolean, a list of
-- methods, or a table of method -> boolean; any of them naming BiRefNet counts.
local function hasBirefnet(features)
  local br = features and features.backgroundRemoval
  if br == true then return true end
  if type(br) == "table" then
    if br.birefnet == true then return true end
    for _, method in ipairs(br) do
      if method == "birefnet" then return true end
    end
  end
  return false
end
M.hasBirefnet = hasBirefnet

function M.engineLabel(name, engine)
  if engine and not engine.available then
    return name .. M.UNAVAILABLE_SUFFIX
  end
  return name
end

function M.engineNameFromLabel(label)
  if type(label) ~= "string" or label == "" or label == M.SERVER_DEFAULT then
    return nil
  end
  local suffix = M.UNAVAILABLE_SUFFIX
  if label:sub(-#suffix) == suffix then
    return label:sub(1, -#suffix - 1)
  end
  return label
end

-- Engine names, the server's default first, then alphabetical (pairs order
-- is random, and a stable list keeps the combobox from jumping around).
function M.engineNames(enginesFrame)
  local names = {}
  if not enginesFrame then return names end
  for name in pairs(enginesFrame.engines) do
    if name ~= enginesFrame.default then names[#names + 1] = name end
  end
  table.sort(names)
  if enginesFrame.default and enginesFrame.engines[enginesFrame.default] then
    table.insert(names, 1, enginesFrame.default)
  end
  return names
end

local function nameOf(entry)
  if type(entry) == "string" then return entry end
  if type(entry) == "table" and type(entry.name) == "string" then return entry.name end
  return nil
end

-- Model and LoRA names, when the server lists them in the engines frame
-- (per engine or top level); `extra` keeps the last used value selectable.
local function nameOptions(first, engine, frame, field, extra)
  local out, seen = { first }, { [first] = true }
  local list = (engine and type(engine[field]) == "table" and engine[field])
    or (frame and type(frame[field]) == "table" and frame[field]) or {}
  for _, entry in ipairs(list) do
    local name = nameOf(entry)
    if name and not seen[name] then
      out[#out + 1] = name
      seen[name] = true
    end
  end
  if type(extra) == "string" and extra ~= "" and not seen[extra] then
    out[#out + 1] = extra
  end
  return out
end

local function contains(list, value)
  for _, v in ipairs(list) do
    if v == value then return true end
  end
  return false
end

-- Each engine in the engines frame lists every base model with whether it can
-- run there now ({name, runnable, reason}, src/api/engines-summary.ts); an
-- older server lists model names only, for all engines together, and then for
-- MLX the dialog can only say that an unconverted model will be refused.
local function modelEntry(enginesFrame, engineName, model)
  local engine = enginesFrame and engineName and enginesFrame.engines[engineName]
  if not engine or type(engine.models) ~= "table" then return nil end
  for _, entry in ipairs(engine.models) do
    if type(entry) == "table" and entry.name == model then return entry end
  end
  return nil
end

function M.modelBlocked(enginesFrame, engineName, model)
  local entry = modelEntry(enginesFrame, engineName, model)
  return entry ~= nil and entry.runnable == false
end

function M.modelHint(enginesFrame, engineName, model)
  local entry = modelEntry(enginesFrame, engineName, model)
  if entry and entry.runnable == false then
    return ("%s cannot run on %s now: %s"):format(model, engineName, entry.reason or "no reason given")
  end
  local engine = enginesFrame and engineName and enginesFrame.engines[engineName]
  if engineName == "mlx" and engine and type(engine.models) ~= "table" then
    return "MLX runs converted models only; the server does not list which are converted yet."
  end
  return ""
end

-- What the dialog shows for the engine in `values.engine` (a label or name).
-- enginesFrame is the parsed engines frame, or nil while it has not arrived.
function M.engineView(enginesFrame, values)
  values = values or {}
  local view = {}
  local wanted = M.engineNameFromLabel(values.engine)

  if not enginesFrame then
    -- Nothing known yet: let the server apply its defaults and judge.
    view.engineOptions = { M.SERVER_DEFAULT }
    view.engine = M.SERVER_DEFAULT
    view.engineName = nil
    view.engineHint = "Waiting for the server's engine list…"
    view.generateEnabled = true
    view.loraEnabled = true
    view.loraHint = ""
    view.backgroundOptions = { M.BACKGROUND[1].label, M.BACKGROUND[2].label }
    view.modelOptions = nameOptions(M.SERVER_DEFAULT, nil, nil, "models", values.model)
    view.loraOptions = nameOptions(M.NO_LORA, nil, nil, "loras", values.lora)
    view.img2img, view.inpaint = true, true
  else
    local names = M.engineNames(enginesFrame)
    view.engineOptions = {}
    for i, name in ipairs(names) do
      view.engineOptions[i] = M.engineLabel(name, enginesFrame.engines[name])
    end
    local name = (wanted and enginesFrame.engines[wanted]) and wanted or names[1]
    local engine = name and enginesFrame.engines[name]
    view.engineName = name
    view.engine = name and M.engineLabel(name, engine) or M.SERVER_DEFAULT
    if #view.engineOptions == 0 then
      view.engineOptions = { M.SERVER_DEFAULT }
    end

    if not engine then
      view.engineHint = "The server reported no engines."
      view.generateEnabled = false
    elseif not engine.available then
      view.engineHint = ("%s is unavailable: %s"):format(name, engine.reason or "no reason given")
      view.generateEnabled = false
    else
      view.engineHint = engine.device and ("%s on %s"):format(name, engine.device) or name
      view.generateEnabled = true
    end

    local features = engine and engine.features or {}
    view.loraEnabled = features.lora == true
    view.loraHint = view.loraEnabled and ""
      or ("LoRA is not supported by the %s engine"):format(name or "selected")

    view.backgroundOptions = {}
    for _, choice in ipairs(M.BACKGROUND) do
      if not choice.feature or hasBirefnet(features) then
        view.backgroundOptions[#view.backgroundOptions + 1] = choice.label
      end
    end
    view.modelOptions = nameOptions(M.SERVER_DEFAULT, engine, enginesFrame, "models", values.model)
    view.loraOptions = nameOptions(M.NO_LORA, engine, enginesFrame, "loras", values.lora)
    view.img2img = features.img2img == true
    view.inpaint = features.inpaint == true
    view.img2imgHint = view.img2img and "" or ("The %s engine cannot start from an image"):format(name or "selected")
  end
  view.img2imgHint = view.img2imgHint or ""

  view.removeBackground = contains(view.backgroundOptions, values.removeBackground)
    and values.removeBackground or M.BACKGROUND[1].label
  view.model = contains(view.modelOptions, values.model) and values.model or M.SERVER_DEFAULT
  view.modelHint = M.modelHint(enginesFrame, view.engineName, view.model)
  if M.modelBlocked(enginesFrame, view.engineName, view.model) then view.generateEnabled = false end
  view.lora = (view.loraEnabled and contains(view.loraOptions, values.lora)) and values.lora or M.NO_LORA
  return view
end

---------------------------------------------------------------------------
-- Validation: dialog values -> job
---------------------------------------------------------------------------

local function trim(s)
  return (tostring(s or ""):gsub("^%s+", ""):gsub("%s+$", ""))
end

-- Dialog number widgets give numbers, entries give text; accept both.
local function toNumber(v)
  if type(v) == "number" then return v end
  return tonumber(trim(v))
end

local function intIn(errors, label, v, range)
  local n = toNumber(v)
  if n == nil or n ~= math.floor(n) then
    errors[#errors + 1] = ("%s must be a whole number"):format(label)
    return nil
  end
  n = math.tointeger(n)
  if n < range.min or n > range.max then
    errors[#errors + 1] = ("%s must be between %d and %d"):format(label, range.min, range.max)
    return nil
  end
  return n
end

-- The server measures a string as JavaScript does, in UTF-16 code units:
-- a character beyond U+FFFF (most emoji) counts twice. Text that is not
-- UTF-8 counts its bytes (the server would refuse it anyway).
local function utf16Length(text)
  local n = 0
  local ok = pcall(function()
    for _, cp in utf8.codes(text) do n = n + (cp > 0xFFFF and 2 or 1) end
  end)
  return ok and n or #text
end
M.utf16Length = utf16Length

local function lengthAtMost(errors, label, text, limit)
  local n = utf16Length(text)
  if n > limit.maxLength then
    errors[#errors + 1] = ("%s is too long (%d characters, at most %d)"):format(label, n, limit.maxLength)
  end
end

local function sizeIn(errors, label, v)
  local r = M.LIMITS.size
  local n = intIn(errors, label, v, r)
  if n and n % r.multiple ~= 0 then
    errors[#errors + 1] = ("%s must be a multiple of %d (got %d)"):format(label, r.multiple, n)
    return nil
  end
  return n
end

local function backgroundValue(label)
  for _, choice in ipairs(M.BACKGROUND) do
    if choice.label == label then return choice.value, choice end
  end
  return nil
end

-- Returns job or nil, {reasons}. enginesFrame (optional) enables the checks
-- that depend on the chosen engine.
-- A third result lists notes: things the job does differently from what was
-- asked because the engine cannot do it (shown, not blocking).
function M.buildJob(values, enginesFrame)
  local errors, job, notes = {}, {}, {}

  local prompt = trim(values.prompt)
  if prompt == "" then
    errors[#errors + 1] = "Prompt is empty"
  end
  lengthAtMost(errors, "Prompt", prompt, M.LIMITS.prompt)
  job.prompt = prompt
  local negative = trim(values.negativePrompt)
  lengthAtMost(errors, "Negative prompt", negative, M.LIMITS.negativePrompt)
  if negative ~= "" then job.negativePrompt = negative end

  local engineName = M.engineNameFromLabel(values.engine)
  local engine = enginesFrame and engineName and enginesFrame.engines[engineName]
  if engineName then
    job.engine = engineName
    if enginesFrame and not engine then
      errors[#errors + 1] = ("Unknown engine '%s'"):format(engineName)
    elseif engine and not engine.available then
      errors[#errors + 1] = ("%s is unavailable: %s"):format(engineName, engine.reason or "no reason given")
    end
  end

  local model = trim(values.model)
  if model ~= "" and model ~= M.SERVER_DEFAULT then job.model = model end

  -- Base size
  local preset = M.findSizePreset(values.sizePreset)
  if preset then
    job.width, job.height = preset.width, preset.height
  else
    job.width = sizeIn(errors, "Width", values.width)
    job.height = sizeIn(errors, "Height", values.height)
  end

  job.steps = intIn(errors, "Steps", values.steps, M.LIMITS.steps)
  local cfg = toNumber(values.guidanceScale)
  if cfg == nil or cfg < M.LIMITS.guidanceScale.min or cfg > M.LIMITS.guidanceScale.max then
    errors[#errors + 1] = ("Guidance must be a number between %d and %d"):format(
      M.LIMITS.guidanceScale.min, M.LIMITS.guidanceScale.max)
  else
    job.guidanceScale = math.tointeger(cfg) or cfg
  end

  -- Seed: empty or -1 means random, which the server signals by omission.
  local seedText = trim(values.seed)
  if seedText ~= "" and seedText ~= "-1" then
    job.seed = intIn(errors, "Seed", seedText, M.LIMITS.seed)
  end

  -- LoRA
  local lora = trim(values.lora)
  if lora ~= "" and lora ~= M.NO_LORA then
    if engine and not engine.features.lora then
      errors[#errors + 1] = ("LoRA is not supported by the %s engine"):format(engineName)
    end
    local pct = intIn(errors, "LoRA strength", values.loraStrength or 100, M.LIMITS.loraStrength)
    job.lora = { name = lora, strength = pct and pct / 100 }
  end

  -- Background removal
  local bg, choice = backgroundValue(values.removeBackground or "Off")
  if choice == nil then
    errors[#errors + 1] = ("Unknown background removal '%s'"):format(tostring(values.removeBackground))
  else
    if choice.feature and engine and not hasBirefnet(engine.features) then
      errors[#errors + 1] = ("BiRefNet background removal is not available on the %s engine"):format(engineName)
    end
    job.removeBackground = bg
  end

  local features = engine and engine.features or nil

  -- Candidates: seeds seed, seed+1, … (the server's `count`).
  local count = intIn(errors, "Candidates", values.count or 1, M.LIMITS.count)
  if count and count > 1 then job.count = count end

  -- From canvas: img2img from the cel or the selection (values.source from
  -- source.fromCanvas, with rgba as base64 already).
  local src = values.source
  if src then
    if features and features.img2img ~= true then
      errors[#errors + 1] = ("The %s engine cannot start from an image (img2img); untick From canvas"):format(engineName)
    end
    job.inputImage = { width = src.width, height = src.height, rgba = src.rgbaBase64 }
    local pct = intIn(errors, "Strength", values.strength or 75, M.LIMITS.strength)
    job.strength = pct and pct / 100
    if src.maskBase64 then
      if features and features.inpaint ~= true then
        notes[#notes + 1] = ("the %s engine cannot repaint only the selection, so its whole rectangle is "
          .. "regenerated"):format(engineName)
      else
        job.mask = { width = src.width, height = src.height, rgba = src.maskBase64 }
      end
    end
  end

  -- Pixel-art post-process (grid size, palette, fit) — one block or none.
  if values.pixelPreset ~= M.PIXEL_OFF then
    local px = M.findPixelPreset(values.pixelPreset)
    local pixel = {}
    if px then
      pixel.width, pixel.height = px.width, px.height
    else
      pixel.width = intIn(errors, "Pixel width", values.pixelWidth, M.LIMITS.pixel)
      pixel.height = intIn(errors, "Pixel height", values.pixelHeight, M.LIMITS.pixel)
    end
    pixel.colors = intIn(errors, "Colors", values.colors, M.LIMITS.colors)
    local fit = values.fitMode or "contain"
    if not contains(M.FIT_MODES, fit) then
      errors[#errors + 1] = ("Fit must be one of %s"):format(table.concat(M.FIT_MODES, ", "))
    end
    pixel.fitMode = fit
    job.pixel = pixel
  end

  -- From canvas: the result must drop back onto the area it came from, so
  -- the pixel grid is that area, stretched (the server scaled the init image
  -- up to the generation size the same way); with pixel art Off the grid
  -- still brings the image back to that size, keeping every colour.
  if src then
    job.pixel = job.pixel or { colors = 0 }
    job.pixel.width, job.pixel.height, job.pixel.fitMode = src.width, src.height, "stretch"
  end

  -- The sprite's palette replaces the colour count (it defines the colours).
  if values.palette then
    if not job.pixel then
      errors[#errors + 1] = "Use sprite palette needs the pixel-art step (Sprite size not Off)"
    elseif #values.palette < 1 or #values.palette > 256 then
      errors[#errors + 1] = "The palette must have 1 to 256 colours"
    else
      job.pixel.palette = values.palette
      job.pixel.colors = nil
    end
  end

  if #errors > 0 then
    return nil, errors
  end
  return job, nil, notes
end

return M
