-- PixelAI extension entry point: registers the menu command and hands the
-- Aseprite globals to the pure modules. Nothing else belongs here.

-- Kept across dialog openings: the client (and a job it is running) outlives
-- the dialog window.
local session = {}

-- WebSocket (1.2.30), Timer and json (1.3) are all needed.
local function missingApi()
  local missing = {}
  if WebSocket == nil then missing[#missing + 1] = "WebSocket" end
  if Timer == nil then missing[#missing + 1] = "Timer" end
  if json == nil then missing[#missing + 1] = "json" end
  return missing
end

function init(plugin)
  -- Aseprite 1.3 resolves require() inside the plugin's own folder while
  -- init runs, so modules are loaded here rather than lazily in onclick.
  local dialog = require("dialog")

  plugin:newCommand{
    id = "PixelAIGenerate",
    title = "PixelAI: Generate sprite…",
    group = "layer_new", -- Layer > New…, next to the other "new layer" commands
    onclick = function()
      local missing = missingApi()
      if #missing > 0 then
        app.alert{ title = "PixelAI",
          text = "PixelAI needs Aseprite 1.3 or newer (missing: " .. table.concat(missing, ", ") .. ")." }
        return
      end
      if session.controller and not session.controller.closed then
        session.controller.dlg:close()
      end
      local api = {
        app = app, Dialog = Dialog, Image = Image, Sprite = Sprite, Point = Point, Rectangle = Rectangle,
        ColorMode = ColorMode,
        WebSocket = WebSocket, WebSocketMessageType = WebSocketMessageType, Timer = Timer, json = json,
      }
      session.controller = dialog.open(session, api, plugin.preferences)
    end,
  }
end

function exit(plugin)
  if session.controller and not session.controller.closed then
    session.controller.dlg:close()
  end
  if session.client then
    session.client:close()
    session.client = nil
  end
  local timer = session.placer and session.placer.timer
  if timer and timer.isRunning then timer:stop() end
end
