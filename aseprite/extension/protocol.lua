-- The /ws wire protocol (docs/design.md "WebSocket /ws"): frame builders for
-- client -> server and a parser for server -> client frames.
-- Pure: no Aseprite globals. The JSON codec is passed in, because inside
-- Aseprite it is the built-in `json` and elsewhere (tests, tools) dkjson.

local base64 = require("base64")

local M = {}

---------------------------------------------------------------------------
-- Plain-table copy
---------------------------------------------------------------------------

-- Aseprite's json.decode returns userdata proxies (json11 values): fields are
-- read through __index, objects iterate through __pairs, but arrays do NOT
-- iterate (their __pairs iterator yields nothing) and next()/rawget see
-- nothing. Everything past the parser therefore works on plain tables.
-- Strategy: an object proxy yields keys through pairs(); anything that yields
-- none is read as an array through # and integer indexing (an empty object
-- and an empty array both become {}).
-- Numbers come back as floats (json11 pushes lua_pushnumber), so 512 would
-- print as "512.0" in a layer name; whole numbers are turned into integers.
local function toPlain(value, depth)
  local kind = type(value)
  if kind == "number" then
    return math.tointeger(value) or value
  end
  if kind ~= "table" and kind ~= "userdata" then
    return value
  end
  depth = (depth or 0) + 1
  if depth > 64 then
    error("JSON nesting deeper than 64 levels")
  end
  local copy, any = {}, false
  for k, v in pairs(value) do
    any = true
    copy[k] = toPlain(v, depth)
  end
  if not any then
    local n = #value
    for i = 1, n do
      copy[i] = toPlain(value[i], depth)
    end
  end
  return copy
end
M.toPlain = toPlain

---------------------------------------------------------------------------
-- Client -> server frames (plain tables; encode() turns them into text)
---------------------------------------------------------------------------

-- job: see request.lua (prompt, negativePrompt, model, engine, width, height,
-- steps, guidanceScale, seed, lora = {name, strength}, removeBackground,
-- pixel = {width, height, colors, fitMode}, idempotencyKey)
function M.submit(requestId, job)
  assert(type(requestId) == "string" and requestId ~= "", "submit needs a requestId")
  assert(type(job) == "table" and type(job.prompt) == "string", "submit needs a job with a prompt")
  return { type = "submit", requestId = requestId, job = job }
end

function M.cancel(id)
  assert(id ~= nil, "cancel needs a job id")
  return { type = "cancel", id = id }
end

function M.subscribe(id)
  assert(id ~= nil, "subscribe needs a job id")
  return { type = "subscribe", id = id }
end

function M.engines()
  return { type = "engines" }
end

function M.encode(json, frame)
  return json.encode(frame)
end

---------------------------------------------------------------------------
-- Server -> client frames
---------------------------------------------------------------------------

local function isString(v) return type(v) == "string" and v ~= "" end
local function isId(v) return isString(v) or math.type(v) == "integer" end
local function isCount(v) return type(v) == "number" and v >= 0 and v == math.floor(v) end

-- Required fields per frame type; a frame missing one is a protocol error.
local REQUIRED = {
  accepted = { requestId = isString, id = isId },
  progress = { id = isId, step = isCount, totalSteps = isCount },
  completed = { id = isId, width = isCount, height = isCount, rgbaBase64 = function(v) return type(v) == "string" end },
  failed = { id = isId, code = isString },
  cancelled = { id = isId },
  engines = { engines = function(v) return type(v) == "table" end },
  error = { code = isString },
}

-- Engine entries are normalised so the UI never has to nil-check nested
-- fields: available is a boolean, features a table of booleans.
local function normaliseEngines(frame)
  -- Tolerate the GET /engines body nested one level deeper.
  if type(frame.engines) == "table" and type(frame.engines.engines) == "table" then
    frame.default = frame.default or frame.engines.default
    frame.engines = frame.engines.engines
  end
  for name, engine in pairs(frame.engines) do
    if type(engine) ~= "table" then
      frame.engines[name] = nil
    else
      engine.available = engine.available == true
      if type(engine.features) ~= "table" then engine.features = {} end
      if type(engine.schedulers) ~= "table" then engine.schedulers = {} end
    end
  end
  return frame
end

-- Parses one text frame. Returns a plain table with a `type` field, or nil
-- and a reason. Frame types this client does not know are returned as they
-- are (a newer server may add some) and the caller ignores them.
function M.parse(json, text)
  if type(text) ~= "string" then
    return nil, "frame is not text"
  end
  local ok, decoded = pcall(json.decode, text)
  if not ok or decoded == nil then
    return nil, "frame is not valid JSON"
  end
  local frame = toPlain(decoded)
  if type(frame) ~= "table" or not isString(frame.type) then
    return nil, "frame has no type"
  end
  local required = REQUIRED[frame.type]
  if required then
    for field, check in pairs(required) do
      if not check(frame[field]) then
        return nil, ("%s frame has a missing or invalid '%s'"):format(frame.type, field)
      end
    end
  end
  if frame.type == "engines" then
    normaliseEngines(frame)
  elseif frame.type == "failed" or frame.type == "error" then
    frame.message = type(frame.message) == "string" and frame.message or ""
  end
  return frame
end

-- Decodes the pixels of a completed frame and checks them against its size:
-- Image.bytes in Aseprite rejects a string whose length is not
-- rowStride * height, so a short payload must be caught here, with a reason.
function M.decodeImage(frame)
  local rgba, err = base64.decode(frame.rgbaBase64)
  if not rgba then
    return nil, err
  end
  local expected = frame.width * frame.height * 4
  if #rgba ~= expected then
    return nil, ("image is %d bytes, expected %d for %dx%d RGBA"):format(#rgba, expected, frame.width, frame.height)
  end
  return rgba
end

-- The candidates of a `completed` frame of a job with count > 1
-- ([{index, seed, width, height, rgbaBase64}], candidate 0 included), decoded.
-- A candidate that does not decode is left out (the others are still worth
-- picking); nil when the frame has no candidate list.
function M.decodeCandidates(frame)
  if type(frame.candidates) ~= "table" then return nil end
  local out = {}
  for i, c in ipairs(frame.candidates) do
    if type(c) == "table" and isCount(c.width) and isCount(c.height) and type(c.rgbaBase64) == "string" then
      local rgba = M.decodeImage(c)
      if rgba then
        out[#out + 1] = { index = math.type(c.index) == "integer" and c.index or i - 1, seed = c.seed,
          width = c.width, height = c.height, rgba = rgba }
      end
    end
  end
  return out
end

-- Largest preview side the server sends (the latent resolution, capped at
-- 128); anything bigger is not a preview and is not worth decoding.
M.MAX_PREVIEW_SIDE = 128

-- Decodes the raw RGBA of a progress frame's step preview
-- ({width, height, rgbaBase64}: the server adds raw bytes because decoding
-- its PNG in Lua would cost more than a preview is worth). Returns rgba or
-- nil and a reason; a bad preview is skipped, never an error for the job.
function M.decodePreview(preview)
  if type(preview) ~= "table" or type(preview.rgbaBase64) ~= "string" then
    return nil, "no preview"
  end
  local w, h = preview.width, preview.height
  if math.type(w) ~= "integer" or math.type(h) ~= "integer" or w < 1 or h < 1
      or w > M.MAX_PREVIEW_SIDE or h > M.MAX_PREVIEW_SIDE then
    return nil, "preview size out of range"
  end
  return M.decodeImage({ rgbaBase64 = preview.rgbaBase64, width = w, height = h })
end

return M
