-- Persistent settings in plugin.preferences (Aseprite saves that table
-- between sessions). Values are stored flat, one scalar per key with a
-- "last_" prefix: nested tables are not something every Aseprite version
-- round-trips, scalars are.

local M = {}

M.DEFAULT_SERVER_URL = "http://127.0.0.1:5000"

-- Dialog defaults. Strings for the number entries because Dialog entries
-- hold text; request.lua validates and converts.
M.DEFAULTS = {
  prompt = "",
  negativePrompt = "",
  engine = "",            -- empty: the server's default engine
  model = "",             -- empty: the server's default model
  lora = "None",
  loraStrength = 100,     -- slider in percent; 100 = strength 1.0
  sizePreset = "512x512",
  width = "512",
  height = "512",
  steps = "15",           -- the seed extension's default
  guidanceScale = "7.5",
  seed = "",
  pixelPreset = "64x64",
  pixelWidth = "64",
  pixelHeight = "64",
  colors = "16",
  fitMode = "contain",
  removeBackground = "Off",
  centre = false,         -- place the result centred instead of top-left
  fromCanvas = false,     -- img2img from the selection or the active cel
  strength = 75,          -- img2img strength in percent (server default 0.75)
  usePalette = false,     -- send the sprite's palette
  count = 1,              -- candidates per job
}

local KEY_PREFIX = "last_"

-- The ws:// URL the client connects to, from the http(s) server URL the user
-- knows (the same one the legacy extension and Swagger UI use).
function M.wsUrl(serverUrl)
  local url = (type(serverUrl) == "string" and serverUrl ~= "") and serverUrl or M.DEFAULT_SERVER_URL
  url = url:gsub("^%s+", ""):gsub("%s+$", "")
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.+)$")
  if not scheme then
    scheme, rest = "http", url
  end
  scheme = scheme:lower()
  local wsScheme = ({ http = "ws", https = "wss", ws = "ws", wss = "wss" })[scheme]
  if not wsScheme then
    return nil, "unsupported server URL scheme '" .. scheme .. "'"
  end
  rest = rest:gsub("/+$", "")
  if not rest:match("/ws$") then
    rest = rest .. "/ws"
  end
  return wsScheme .. "://" .. rest
end

function M.serverUrl(store)
  local url = store and store.serverUrl
  if type(url) == "string" and url ~= "" then
    return url
  end
  return M.DEFAULT_SERVER_URL
end

function M.setServerUrl(store, url)
  store.serverUrl = url
end

-- Dialog number fields hand back numbers while their defaults are text:
-- keep one type per key, and never show "512.0" for a whole number.
local function coerce(value, default)
  if type(value) == type(default) then
    return value
  end
  if type(default) == "string" and type(value) == "number" then
    local whole = math.tointeger(value)
    return whole and tostring(whole) or tostring(value)
  end
  if type(default) == "number" and type(value) == "string" then
    return tonumber(value)
  end
  return nil
end
M.coerce = coerce

-- Last dialog values merged over the defaults. Stored values of an unusable
-- type (an older version of this extension) fall back to the default.
function M.load(store)
  local settings = {}
  for key, default in pairs(M.DEFAULTS) do
    local stored = store and store[KEY_PREFIX .. key]
    local value = stored ~= nil and coerce(stored, default) or nil
    if value == nil then
      value = default
    end
    settings[key] = value
  end
  return settings
end

function M.save(store, settings)
  for key, default in pairs(M.DEFAULTS) do
    local value = coerce(settings[key], default)
    if value ~= nil then
      store[KEY_PREFIX .. key] = value
    end
  end
end

return M
