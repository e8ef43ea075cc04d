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

-- result: {rgba, width, height, prompt, colors?, seed?, centre?}
-- Returns {sprite, layer, cel, newSprite} or nil, reason.
function M.place(api, result)
  local app = api.app
  local image, err = M.makeImage(api, result.rgba, result.width, result.height)
  if not image then
    return nil, err
  end

  -- Pasting RGB pixels into an indexed or grayscale sprite would need a
  -- palette conversion the artist did not ask for: open a new sprite instead.
  local sprite = app.sprite or app.activeSprite
  local newSprite = false
  if sprite == nil or sprite.colorMode ~= api.ColorMode.RGB then
    sprite = api.Sprite(result.width, result.height, api.ColorMode.RGB)
    newSprite = true
  end

  local frame = app.frame or app.activeFrame
  local frameNumber = (frame and not newSprite) and frame.frameNumber or 1
  local x, y = M.position(result.centre, sprite.width, sprite.height, result.width, result.height)
  local name = M.layerName(result)

  local layer, cel
  -- One transaction: a single Ctrl+Z removes the whole generation.
  app.transaction("PixelAI: Generate", function()
    -- A new sprite starts with an empty "Layer 1" that already has a cel;
    -- add our layer and drop that one rather than replace a cel in place.
    local emptyLayer = newSprite and sprite.layers[1] or nil
    layer = sprite:newLayer()
    layer.name = name
    cel = sprite:newCel(layer, frameNumber, image, api.Point(x, y))
    if emptyLayer then
      sprite:deleteLayer(emptyLayer)
    end
  end)
  app.refresh()
  return { sprite = sprite, layer = layer, cel = cel, newSprite = newSprite }
end

return M
