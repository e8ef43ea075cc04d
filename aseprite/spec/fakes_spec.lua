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

  it("the WebSocket constructor asks permission each time unless remembered; a refusal raises", function()
    local WebSocket = fakes.newWebSocketClass()
    WebSocket{ url = "ws://x/ws" }
    WebSocket{ url = "ws://x/ws" }
    assert.equals(2, WebSocket.security.prompts) -- Allow without "don't show again" is not remembered
    WebSocket.security.answer = "deny"
    assert.has_error(function() WebSocket{ url = "ws://x/ws" } end,
      "the script doesn't have access to create a WebSocket for 'ws://x/ws'")
    assert.equals(3, WebSocket.security.prompts)
    WebSocket.security.answer = "allowRemember"
    WebSocket{ url = "ws://x/ws" }
    WebSocket{ url = "ws://x/ws" }
    assert.equals(4, WebSocket.security.prompts)
  end)

  it("a socket reconnects on the same object; errors come in onreceive's third argument", function()
    local WebSocket = fakes.newWebSocketClass()
    local got = {}
    local ws = WebSocket{ url = "ws://x/ws", onreceive = function(t, d, e) got[#got + 1] = { t, d, e } end }
    ws:connect()
    ws:serverError("Connection refused")
    ws:close()
    ws:connect()
    assert.equals("connecting", ws.status)
    ws:serverOpen()
    assert.same({ { fakes.WebSocketMessageType.ERROR, "", "Connection refused" },
      { fakes.WebSocketMessageType.OPEN, "", "" } }, got)
    assert.equals(1, WebSocket.security.prompts)
  end)

  it("app.transaction can find the document locked: the function never runs", function()
    local app = fakes.newApp()
    local sprite = app.Sprite(8, 8)
    app.lockFailures = 1
    local ran = false
    assert.has_error(function() app.transaction("x", function() ran = true end) end,
      "cannot lock document for transaction\ncannot lock the document for writing")
    assert.is_false(ran)
    app.transaction("x", function() sprite:newLayer() end)
    assert.equals(2, #sprite.layers)
    -- an error inside rolls the transaction back
    assert.has_error(function() app.transaction("y", function() sprite:newLayer(); error("boom") end) end)
    assert.equals(2, #sprite.layers)
    assert.same({ "x" }, app.transactions)
  end)

  it("Dialog:modify ignores an option that is not among the options", function()
    local dlg = fakes.Dialog{ title = "t" }
    local changes = 0
    dlg:combobox{ id = "c", option = "zzz", options = { "a", "b" }, onchange = function() changes = changes + 1 end }
    assert.equals("a", dlg.data.c) -- unknown initial option: the first item
    dlg:modify{ id = "c", option = "nope" }
    assert.equals("a", dlg.data.c)
    assert.equals(0, changes)
    dlg:modify{ id = "c", option = "b" }
    assert.equals("b", dlg.data.c)
    assert.equals(1, changes)
    dlg:modify{ id = "c", option = "b" }
    assert.equals(1, changes) -- same item: no Change
  end)

  it("replacing combobox options selects item 1 and always fires onchange", function()
    local dlg = fakes.Dialog{ title = "t" }
    local seen = {}
    dlg:combobox{ id = "c", option = "b", options = { "a", "b" } }
    dlg:modify{ id = "c", onchange = nil }
    dlg.byId.c.onchange = function() seen[#seen + 1] = dlg.data.c end
    dlg:modify{ id = "c", options = { "a", "b" } } -- same list, still a reset
    assert.same({ "a" }, seen)
    dlg:modify{ id = "c", options = { "x", "b" }, option = "b" }
    assert.same({ "a", "x", "b" }, seen)
    dlg:modify{ id = "c", options = {} }
    assert.is_nil(dlg.data.c)
  end)

  it("number fields with decimals=0 (the default) give the integer part", function()
    local dlg = fakes.Dialog{ title = "t" }
    dlg:number{ id = "n", text = "7.9" }
    dlg:number{ id = "d", text = "7.25", decimals = 2 }
    dlg:number{ id = "z", text = "12abc", decimals = 0 }
    assert.equals(7, dlg.data.n)
    assert.equals("integer", math.type(dlg.data.n))
    assert.equals(7.25, dlg.data.d)
    assert.equals(12, dlg.data.z)
    dlg:set("n", "-3.5")
    assert.equals(-3, dlg.data.n)
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
