-- Results waiting to go into the sprite. A placement that finds the document
-- locked ("cannot lock document for transaction": the artist is in the middle
-- of a command) stays queued and is tried again on the next Timer tick, in
-- order, until it lands: a finished image is never dropped. Lives in the
-- session, so it outlives the dialog.

local canvas = require("canvas")

local Placer = {}
Placer.__index = Placer

-- opts: api (app, Image, Sprite, Point, ColorMode), Timer, interval?,
-- onEvent(event): {kind = "placed", result, placed} | {kind = "busy",
-- result, reason} | {kind = "failed", result, reason}.
function Placer.new(opts)
  local self = setmetatable({ api = opts.api, Timer = opts.Timer, interval = opts.interval or 0.25,
    onEvent = opts.onEvent or function() end, queue = {} }, Placer)
  return self
end

function Placer:_emit(event)
  local ok, err = pcall(self.onEvent, event)
  if not ok then print("PixelAI: " .. tostring(err)) end
end

function Placer:pending()
  return #self.queue
end

-- Tries the queue's head (and what follows, while they land).
function Placer:_drain()
  while #self.queue > 0 do
    local result = self.queue[1]
    local placed, err, busy = canvas.place(self.api, result)
    if busy then
      if not result.busyReported then
        result.busyReported = true
        self:_emit({ kind = "busy", result = result, reason = err })
      end
      if not self.timer then
        self.timer = self.Timer{ interval = self.interval, ontick = function() self:_drain() end }
      end
      if not self.timer.isRunning then self.timer:start() end
      return
    end
    table.remove(self.queue, 1)
    if placed then
      self:_emit({ kind = "placed", result = result, placed = placed })
    else
      self:_emit({ kind = "failed", result = result, reason = err })
    end
  end
  if self.timer and self.timer.isRunning then self.timer:stop() end
end

-- Queues a result (see canvas.place for its fields) and tries at once.
function Placer:add(result)
  self.queue[#self.queue + 1] = result
  if #self.queue == 1 then self:_drain() end
end

return Placer
