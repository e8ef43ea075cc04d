-- Prints the submit frame the extension would send for some dialog values,
-- built by the extension's own request.lua + protocol.lua, so a server test
-- can send exactly what Aseprite sends.
--
-- Usage: echo '{"prompt":"a knight","pixelPreset":"32x32","colors":"16"}' \
--          | lua5.4 aseprite/tools/submit_frame.lua [requestId]
-- Missing values take the dialog defaults (prefs.lua). What From canvas and
-- Use sprite palette read from the sprite can be given directly:
--   "source": {"width":2,"height":1,"rgbaBase64":"…","maskBase64":"…"},
--   "palette": ["#000000", …], with "strength" (percent) and "count".
-- Prints one JSON line, or "error <reasons>" and exits 1.

local here = (arg and arg[0] or ""):match("^(.*)[/\\]") or "."
package.path = here .. "/../extension/?.lua;" .. package.path

local dkjson = require("dkjson")
local protocol = require("protocol")
local request = require("request")
local prefs = require("prefs")

local input = io.stdin:read("a")
local given = {}
if input:match("%S") then
  local err
  given, _, err = dkjson.decode(input)
  if err or type(given) ~= "table" then
    io.stdout:write("error input is not a JSON object\n")
    os.exit(1)
  end
end

local values = prefs.load({})
for k, v in pairs(given) do values[k] = v end

local job, problems = request.buildJob(values, nil)
if not job then
  io.stdout:write("error ", table.concat(problems, "; "), "\n")
  os.exit(1)
end
local requestId = arg[1] or "tool-1"
job.idempotencyKey = requestId
io.stdout:write(protocol.encode(dkjson, protocol.submit(requestId, job)), "\n")
