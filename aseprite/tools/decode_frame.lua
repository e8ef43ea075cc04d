-- Reads one server -> client JSON frame from stdin, runs it through the
-- extension's own parser (protocol.lua) and base64 decoder, and prints
--   ok <type> <width> <height> <byteLength>[ candidates <n> <seed,seed,…>]
-- (width/height/byteLength are 0 for frames without pixels; the candidates
-- part only for a completed frame of a job with count > 1), or
--   error <reason>
-- and exits 1. Used by the server's integration test to prove a real
-- `completed` frame is what the extension can put into Image.bytes.
--
-- Usage: lua5.4 aseprite/tools/decode_frame.lua < frame.json
-- Needs dkjson (Debian: lua-dkjson) in place of Aseprite's built-in json.

local here = (arg and arg[0] or ""):match("^(.*)[/\\]") or "."
package.path = here .. "/../extension/?.lua;" .. package.path

local ok, dkjson = pcall(require, "dkjson")
if not ok then
  io.stdout:write("error dkjson not found (apt-get install lua-dkjson)\n")
  os.exit(1)
end
local protocol = require("protocol")

local function fail(reason)
  io.stdout:write("error ", (tostring(reason):gsub("\n", " ")), "\n")
  os.exit(1)
end

local text = io.stdin:read("a")
-- tolerate a trailing newline from `echo`/JSON-lines producers
text = text:gsub("%s+$", "")

local frame, err = protocol.parse(dkjson, text)
if not frame then fail(err) end

local width, height, length = 0, 0, 0
local extra = ""
if frame.type == "completed" then
  local rgba, decodeErr = protocol.decodeImage(frame)
  if not rgba then fail(decodeErr) end
  width, height, length = frame.width, frame.height, #rgba
  local candidates = protocol.decodeCandidates(frame)
  if candidates and #frame.candidates > 1 then
    -- every candidate the server listed must decode, or the picker would
    -- silently show fewer
    if #candidates ~= #frame.candidates then
      fail(("%d of %d candidates do not decode"):format(#frame.candidates - #candidates, #frame.candidates))
    end
    local seeds = {}
    for i, c in ipairs(candidates) do seeds[i] = tostring(c.seed) end
    extra = (" candidates %d %s"):format(#candidates, table.concat(seeds, ","))
  end
elseif frame.type == "failed" or frame.type == "error" then
  -- still "ok": the frame parsed; the code tells the caller what failed
  io.stdout:write(("ok %s 0 0 0 %s\n"):format(frame.type, frame.code))
  os.exit(0)
end
io.stdout:write(("ok %s %d %d %d%s\n"):format(frame.type, width, height, length, extra))
