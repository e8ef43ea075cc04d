local prefs = require("prefs")

describe("prefs", function()
  it("derives the ws URL from the server URL", function()
    assert.equals("ws://127.0.0.1:5000/ws", prefs.wsUrl(nil))
    assert.equals("ws://127.0.0.1:5000/ws", prefs.wsUrl("http://127.0.0.1:5000"))
    assert.equals("ws://127.0.0.1:5000/ws", prefs.wsUrl("http://127.0.0.1:5000/"))
    assert.equals("wss://pixel.example:8443/ws", prefs.wsUrl("https://pixel.example:8443"))
    assert.equals("ws://localhost:5000/ws", prefs.wsUrl("localhost:5000"))
    assert.equals("ws://h:1/ws", prefs.wsUrl("ws://h:1/ws"))
    assert.equals("ws://h:1/pixelai/ws", prefs.wsUrl(" http://h:1/pixelai "))
    local url, err = prefs.wsUrl("ftp://h")
    assert.is_nil(url)
    assert.matches("scheme", err)
  end)

  it("round-trips settings through plugin.preferences", function()
    local store = {}
    local s = prefs.load(store)
    assert.same(prefs.DEFAULTS, s)
    s.prompt = "a knight"
    s.width = 768          -- number widgets hand back numbers…
    s.guidanceScale = 6.5
    s.loraStrength = 80
    s.centre = true
    prefs.save(store, s)
    prefs.setServerUrl(store, "http://10.0.0.2:5000")
    local again = prefs.load(store)
    assert.equals("a knight", again.prompt)
    assert.equals("768", again.width)   -- …stored as the text the dialog shows
    assert.equals("6.5", again.guidanceScale)
    assert.equals(80, again.loraStrength)
    assert.is_true(again.centre)
    assert.equals("http://10.0.0.2:5000", prefs.serverUrl(store))
    for key in pairs(store) do
      assert.is_true(key == "serverUrl" or key:sub(1, 5) == "last_", key)
    end
  end)

  it("falls back to defaults for values of an unusable type", function()
    local s = prefs.load({ last_centre = "yes", last_steps = 30, last_prompt = { "x" } })
    assert.is_false(s.centre)
    assert.equals("30", s.steps)
    assert.equals("", s.prompt)
    assert.equals(prefs.DEFAULT_SERVER_URL, prefs.serverUrl({ serverUrl = "" }))
  end)
end)
