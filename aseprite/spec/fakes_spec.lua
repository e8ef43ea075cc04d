-- The fakes are only worth something if they keep Aseprite's quirks; these
-- checks stop a "helpful" change to a fake from hiding a real bug.
local fakes = require("fakes")

describe("fakes keep Aseprite's quirks", function()
  it("json.decode returns proxies whose arrays do not iterate and whose numbers are floats", function()
    local v = fakes.json.decode('{"n":512,"list":[1,2,3],"o":{"k":"v"}}')
    assert.is_nil(rawget(v, "n"))
    assert.equals("float", math.type(v.n))
    assert.equals(3, #v.list)
    assert.equals(2.0, v.list[2])
    local count = 0
    for _ in pairs(v.list) do count = count + 1 end
    assert.equals(0, count)
    for k, x in pairs(v.o) do assert.equals("k", k); assert.equals("v", x) end
    assert.has_error(function() fakes.json.decode("{oops") end)
  end)

  it("WebSocket:sendText raises before OPEN and after close", function()
    local WebSocket = fakes.newWebSocketClass()
    local ws = WebSocket{ url = "ws://x/ws", onreceive = function() end }
    assert.has_error(function() ws:sendText("a") end, "WebSocket is not connected, can't send text")
    ws:connect()
    assert.has_error(function() ws:sendText("a") end)
    ws:serverOpen()
    ws:sendText("a", "b")
    assert.same({ "ab" }, ws.sent)
    ws:close()
    assert.has_error(function() ws:sendText("a") end)
  end)

  it("Image.bytes must be exactly rowStride * height", function()
    local img = fakes.Image(2, 2, fakes.ColorMode.RGB)
    assert.equals(8, img.rowStride)
    assert.has_error(function() img.bytes = string.rep("x", 15) end)
    img.bytes = string.rep("x", 16)
    assert.equals(16, #img.bytes)
  end)

  it("Dialog:modify raises on an unknown id", function()
    local dlg = fakes.Dialog{ title = "t" }
    dlg:label{ id = "a", text = "" }
    dlg:modify{ id = "a", text = "b" }
    assert.equals("b", dlg.data.a)
    assert.has_error(function() dlg:modify{ id = "nope", text = "x" } end)
  end)

  it("Timer ticks only while running, on a virtual clock", function()
    local Timer = fakes.newTimerClass()
    local n = 0
    local t = Timer{ interval = 0.5, ontick = function() n = n + 1 end }
    Timer.advance(2)
    assert.equals(0, n)
    t:start()
    Timer.advance(2)
    assert.equals(4, n)
    t:stop()
    Timer.advance(2)
    assert.equals(4, n)
  end)
end)
