-- Puts a finished RGBA image into Aseprite as a new layer (or a new sprite
-- when no usable one is open). The Aseprite API is passed in (`api` holds
-- app, Image, Sprite, Point, ColorMode), so specs can use fakes.

local M = {}

local MAX_PROMPT_IN_NAME = 40

-- "PixelAI: a knight 32x32 16c seed 7": enough to tell generations apart in
-- the layers panel and to regenerate one later.
function M.layerName(info)
  local prompt = tostring(info.prompt or ""):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
  if #prompt > MAX_PROMPT_IN_NAME then
    -- cut on a UTF-8 boundary: continuation bytes are 0x80..0xBF
    local cut = MAX_PROMPT_IN_NAME
    while cut > 0 and (prompt:byte(cut + 1) or 0) & 0xC0 == 0x80 do cut = cut - 1 end
    prompt = prompt:sub(1, cut) .. "…"
  end
  local parts = { "PixelAI:" }
  if prompt ~= "" then parts[#parts + 1] = prompt end
  parts[#parts + 1] = ("%dx%d"):format(info.width, info.height)
  if info.colors and info.colors > 0 then parts[#parts + 1] = ("%dc"):format(info.colors) end
  if info.seed ~= nil then parts[#parts + 1] = "seed " .. tostring(info.seed) end
  return table.concat(parts, " ")
end

-- Top-left, or centred on the canvas (may be negative when the image is
-- larger than the sprite; Aseprite keeps the cel, the canvas crops the view).
function M.position(centre, spriteW, spriteH, imageW, imageH)
  if centre then
    return (spriteW - imageW) // 2, (spriteH - imageH) // 2
  end
  return 0, 0
end

-- Image of exactly this RGBA data. Image.bytes requires
-- #rgba == rowStride * height, so the length is checked first with a reason.
function M.makeImage(api, rgba, width, height)
  local image = api.Image(width, height, api.ColorMode.RGB)
  local expected = image.rowStride * height
  if #rgba ~= expected then
    return nil, ("image data is %d bytes, Aseprite expects %d (rowStride %d x %d rows)"):format(
      #rgba, expected, image.rowStride, height)
  end
  image.bytes = rgba
  return image
end

-- Aseprite's app.transaction raises this when another part of the editor
-- holds the document (src/app/script/app_object.cpp); the function has not
-- run, nothing changed, and the same call can succeed a moment later.
function M.isLockError(err)
  return tostring(err):find("cannot lock document", 1, true) ~= nil
end

local function isOpen(app, sprite)
  for _, s in ipairs(app.sprites or {}) do
    if s == sprite then return true end
  end
  return false
end

-- The sprite a result goes into: the one it was made for (From canvas) if it
-- is still open, else the active one. A new RGB sprite when there is none,
-- when it is Indexed/Grayscale (pasting RGB would need a palette conversion
-- the artist did not ask for), or when the result is larger than it (the
-- canvas would crop it).
local function target(api, result)
  local app = api.app
  if result.newSprite and result.sprite and isOpen(app, result.sprite) then
    return result.sprite, true -- made on an earlier, busy, attempt
  end
  local sprite = result.sprite
  if sprite == nil or not isOpen(app, sprite) then sprite = app.sprite or app.activeSprite end
  if sprite == nil or sprite.colorMode ~= api.ColorMode.RGB
      or result.width > sprite.width or result.height > sprite.height then
    return nil, true
  end
  return sprite, false
end

-- result: {rgba, width, height, prompt, colors?, seed?, centre?, bounds?
-- ({x, y}: place there, e.g. the selection it came from), sprite?,
-- frameNumber?}. Returns {sprite, layer, cel, newSprite} or nil, reason,
-- busy (true: the document was locked; call again later with the same
-- result table, it remembers a sprite made for it).
function M.place(api, result)
  local app = api.app
  local image, err = M.makeImage(api, result.rgba, result.width, result.height)
  if not image then
    return nil, err
  end

  local sprite, newSprite = target(api, result)
  if sprite == nil then
    sprite = api.Sprite(result.width, result.height, api.ColorMode.RGB)
    result.sprite, result.newSprite = sprite, true
  end

  local frame = app.frame or app.activeFrame
  local frameNumber = newSprite and 1 or result.frameNumber or (frame and frame.frameNumber) or 1
  local x, y
  if result.bounds and not newSprite then
    x, y = result.bounds.x, result.bounds.y
  else
    x, y = M.position(result.centre, sprite.width, sprite.height, result.width, result.height)
  end
  local name = M.layerName(result)

  local layer, cel
  -- One transaction: a single Ctrl+Z removes the whole generation.
  local ok, txErr = pcall(app.transaction, "PixelAI: Generate", function()
    -- A new sprite starts with an empty "Layer 1" that already has a cel;
    -- add our layer and drop that one rather than replace a cel in place.
    local emptyLayer = newSprite and #sprite.layers == 1 and sprite.layers[1] or nil
    layer = sprite:newLayer()
    layer.name = name
    cel = sprite:newCel(layer, frameNumber, image, api.Point(x, y))
    if emptyLayer then
      sprite:deleteLayer(emptyLayer)
    end
  end)
  if not ok then
    return nil, tostring(txErr), M.isLockError(txErr)
  end
  app.refresh()
  return { sprite = sprite, layer = layer, cel = cel, newSprite = newSprite }
end

return M
