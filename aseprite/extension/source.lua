-- What "From canvas" and "Use sprite palette" read from the open sprite:
-- the init image (raw RGBA, the `{width, height, rgba}` form of the job's
-- inputImage), the selection's mask, and the palette as "#rrggbb" strings.
-- The Aseprite API is passed in, so specs use fakes.

local M = {}

M.MAX_SIDE = 2048     -- the server's pixel-grid limit (request.LIMITS.pixel)
M.MAX_PALETTE = 256   -- the server takes 1..256 palette colours

local TRANSPARENT = "\0\0\0\0"
local WHITE = "\255\255\255\255"

-- One row of `bounds` taken from an RGB image placed at (cx, cy); what lies
-- outside the image is transparent.
local function rowFrom(image, cx, cy, bounds, y)
  local iy = y - cy
  if iy < 0 or iy >= image.height then return TRANSPARENT:rep(bounds.width) end
  local x0 = math.max(bounds.x, cx)
  local x1 = math.min(bounds.x + bounds.width, cx + image.width)
  if x1 <= x0 then return TRANSPARENT:rep(bounds.width) end
  local bytes = image.bytes
  local start = iy * image.rowStride + (x0 - cx) * 4
  return TRANSPARENT:rep(x0 - bounds.x) .. bytes:sub(start + 1, start + (x1 - x0) * 4)
    .. TRANSPARENT:rep(bounds.x + bounds.width - x1)
end

-- Mask in the server's convention: white (opaque) = regenerate, transparent
-- = keep.
local function maskOf(selection, bounds)
  local rows = {}
  for y = bounds.y, bounds.y + bounds.height - 1 do
    local row = {}
    for x = bounds.x, bounds.x + bounds.width - 1 do
      row[#row + 1] = selection:contains(x, y) and WHITE or TRANSPARENT
    end
    rows[#rows + 1] = table.concat(row)
  end
  return table.concat(rows)
end

local function intersect(a, b)
  local x0, y0 = math.max(a.x, b.x), math.max(a.y, b.y)
  local x1 = math.min(a.x + a.width, b.x + b.width)
  local y1 = math.min(a.y + a.height, b.y + b.height)
  if x1 <= x0 or y1 <= y0 then return nil end
  return { x = x0, y = y0, width = x1 - x0, height = y1 - y0 }
end

-- The active cel's pixels, or the selection's bounds and mask when something
-- is selected. Returns {width, height, rgba, mask?, bounds, sprite,
-- frameNumber} or nil and a reason the artist can act on.
function M.fromCanvas(api)
  local app = api.app
  local sprite = app.sprite or app.activeSprite
  if sprite == nil then
    return nil, "From canvas needs an open sprite."
  end
  if sprite.colorMode ~= api.ColorMode.RGB then
    return nil, "From canvas needs an RGB sprite (Sprite > Color Mode > RGB Color)."
  end
  local cel = app.cel or app.activeCel
  if cel == nil or cel.image == nil then
    return nil, "From canvas: the active layer has nothing drawn in this frame."
  end
  local image, pos = cel.image, cel.position
  if image.colorMode ~= api.ColorMode.RGB then
    -- a tilemap layer's cel image holds tile indices, not pixels
    return nil, "From canvas: the active layer is a tilemap; pick a normal layer."
  end
  local frame = app.frame or app.activeFrame
  local out = { sprite = sprite, frameNumber = frame and frame.frameNumber or 1 }
  local selection = sprite.selection
  local bounds
  if selection and not selection.isEmpty then
    local sb = selection.bounds
    bounds = intersect({ x = sb.x, y = sb.y, width = sb.width, height = sb.height },
      { x = 0, y = 0, width = sprite.width, height = sprite.height })
    if not bounds then return nil, "From canvas: the selection lies outside the sprite." end
    out.mask = maskOf(selection, bounds)
  else
    bounds = { x = pos.x, y = pos.y, width = image.width, height = image.height }
  end
  if bounds.width > M.MAX_SIDE or bounds.height > M.MAX_SIDE then
    return nil, ("From canvas: %dx%d is larger than the server's %d px limit; select a smaller area."):format(
      bounds.width, bounds.height, M.MAX_SIDE)
  end
  local rows = {}
  for y = bounds.y, bounds.y + bounds.height - 1 do
    rows[#rows + 1] = rowFrom(image, pos.x, pos.y, bounds, y)
  end
  out.rgba = table.concat(rows)
  out.width, out.height, out.bounds = bounds.width, bounds.height, bounds
  return out
end

-- The active sprite's palette as "#rrggbb" strings: fully transparent
-- entries (the mask colour of indexed sprites) and repeats left out, at most
-- MAX_PALETTE. Returns the list or nil and a reason.
function M.spritePalette(api)
  local sprite = api.app.sprite or api.app.activeSprite
  if sprite == nil then return nil, "Use sprite palette needs an open sprite." end
  local palette = sprite.palettes and sprite.palettes[1]
  if palette == nil or #palette == 0 then return nil, "The sprite has no palette." end
  local out, seen = {}, {}
  for i = 0, #palette - 1 do
    local c = palette:getColor(i)
    if c.alpha > 0 then
      local hex = ("#%02x%02x%02x"):format(c.red, c.green, c.blue)
      if not seen[hex] then
        seen[hex] = true
        out[#out + 1] = hex
        if #out == M.MAX_PALETTE then break end
      end
    end
  end
  if #out == 0 then return nil, "The sprite's palette has only transparent colours." end
  return out
end

return M
