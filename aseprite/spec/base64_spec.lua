local base64 = require("base64")

describe("base64", function()
  it("decodes the RFC 4648 test vectors", function()
    local vectors = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==",
      fooba = "Zm9vYmE=", foobar = "Zm9vYmFy" }
    for plain, encoded in pairs(vectors) do
      assert.equals(plain, base64.decode(encoded))
      assert.equals(encoded, base64.encode(plain))
    end
  end)

  it("round-trips every byte value", function()
    local t = {}
    for i = 0, 255 do t[#t + 1] = string.char(i) end
    local all = table.concat(t)
    assert.equals(all, base64.decode(base64.encode(all)))
  end)

  it("decodes a 512x512 RGBA payload exactly and quickly", function()
    local t = {}
    for i = 1, 512 * 512 do
      t[i] = string.char(i % 256, (i >> 8) % 256, (i * 7) % 256, 255)
    end
    local raw = table.concat(t)
    local encoded = base64.encode(raw)
    local started = os.clock()
    local decoded = base64.decode(encoded)
    local elapsed = os.clock() - started
    assert.equals(512 * 512 * 4, #decoded)
    assert.is_true(decoded == raw)
    -- measured ~0.04 s here; 1 s leaves room for slow CI without hiding a
    -- quadratic regression
    assert.is_true(elapsed < 1, ("decode took %.3f s"):format(elapsed))
  end)

  it("rejects bad input with a reason", function()
    local out, err = base64.decode("Zm9")
    assert.is_nil(out)
    assert.matches("multiple of 4", err)
    out, err = base64.decode("Zm9v!mFy")
    assert.is_nil(out)
    assert.matches("invalid base64 character", err)
    out, err = base64.decode(42)
    assert.is_nil(out)
    assert.matches("not a string", err)
  end)
end)
