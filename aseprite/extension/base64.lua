-- Base64 (RFC 4648, standard alphabet) in plain Lua 5.4.
-- Aseprite's API has no base64 helper for Lua strings in every version we
-- support, and the server sends raw RGBA as base64 inside a JSON text frame.
-- A 512x512 image is ~1.4 MB of base64, so decoding works on 4-char groups
-- through lookup tables and flushes bytes in chunks: building one tiny string
-- per group would be the slow part.

local M = {}

local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local PAD = string.byte("=")

-- byte value -> 6-bit value; absent means "not in the alphabet"
local VALUE = {}
for i = 1, #ALPHABET do
  VALUE[ALPHABET:byte(i)] = i - 1
end

-- string.char(table.unpack(...)) is limited by the C stack (LUAI_MAXCCALLS /
-- unpack limits); 3 * 1024 bytes per call stays far below it.
local CHUNK_GROUPS = 1024

local byte, char, unpack, concat = string.byte, string.char, table.unpack, table.concat

-- Returns the decoded string, or nil and a reason.
function M.decode(text)
  if type(text) ~= "string" then
    return nil, "base64 input is not a string"
  end
  local n = #text
  if n % 4 ~= 0 then
    return nil, "base64 length " .. n .. " is not a multiple of 4"
  end
  if n == 0 then
    return ""
  end

  -- Padding may only sit in the last group.
  local padding = 0
  if byte(text, n) == PAD then padding = 1 end
  if byte(text, n - 1) == PAD then padding = 2 end
  local fullEnd = (padding > 0) and (n - 4) or n

  local parts, out, o = {}, {}, 0
  for i = 1, fullEnd, 4 do
    local a, b, c, d = byte(text, i, i + 3)
    local va, vb, vc, vd = VALUE[a], VALUE[b], VALUE[c], VALUE[d]
    if not (va and vb and vc and vd) then
      return nil, "invalid base64 character near offset " .. (i - 1)
    end
    local v = va << 18 | vb << 12 | vc << 6 | vd
    out[o + 1] = v >> 16
    out[o + 2] = (v >> 8) & 0xFF
    out[o + 3] = v & 0xFF
    o = o + 3
    if o >= CHUNK_GROUPS * 3 then
      parts[#parts + 1] = char(unpack(out, 1, o))
      o = 0
    end
  end
  if o > 0 then
    parts[#parts + 1] = char(unpack(out, 1, o))
  end

  if padding > 0 then
    local a, b, c = byte(text, n - 3, n - 1)
    local va, vb = VALUE[a], VALUE[b]
    if not (va and vb) then
      return nil, "invalid base64 character in the last group"
    end
    if padding == 2 then
      parts[#parts + 1] = char((va << 2 | vb >> 4) & 0xFF)
    else
      local vc = VALUE[c]
      if not vc then
        return nil, "invalid base64 character in the last group"
      end
      local v = va << 18 | vb << 12 | vc << 6
      parts[#parts + 1] = char(v >> 16, (v >> 8) & 0xFF)
    end
  end
  return concat(parts)
end

-- Encoding is only used by tests and tools (the client never uploads pixels),
-- so it favours clarity over speed.
function M.encode(data)
  local parts = {}
  local n = #data
  for i = 1, n, 3 do
    local a, b, c = byte(data, i, i + 2)
    local v = a << 16 | (b or 0) << 8 | (c or 0)
    local s1 = (v >> 18) & 63
    local s2 = (v >> 12) & 63
    local s3 = (v >> 6) & 63
    local s4 = v & 63
    parts[#parts + 1] = ALPHABET:sub(s1 + 1, s1 + 1) .. ALPHABET:sub(s2 + 1, s2 + 1)
      .. (b and ALPHABET:sub(s3 + 1, s3 + 1) or "=")
      .. (c and ALPHABET:sub(s4 + 1, s4 + 1) or "=")
  end
  return concat(parts)
end

return M
