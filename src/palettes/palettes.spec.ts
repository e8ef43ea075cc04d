import { BUILTIN_PALETTES, resolvePalette } from "./palettes";

describe("resolvePalette", () => {
  it("expands a built-in name (any case) to its colours", () => {
    expect(resolvePalette("GameBoy")).toEqual(["#0f380f", "#306230", "#8bac0f", "#9bbc0f"]);
    expect(resolvePalette("pico-8")).toHaveLength(16);
  });

  it("normalises a list: lower case, '#' added, duplicates dropped in order", () => {
    expect(resolvePalette(["FF0000", "#00ff00", "#ff0000"])).toEqual(["#ff0000", "#00ff00"]);
  });

  it.each([
    ["an unknown name", "c64", /unknown palette "c64".*pico-8/],
    ["an empty list", [], /1\.\.256/],
    ["257 colours", Array.from({ length: 257 }, (_, i) => `#${i.toString(16).padStart(6, "0")}`), /1\.\.256/],
    ["a short hex", ["#fff"], /pixel\.palette\[0\]/],
    ["a non-string entry", [0xff0000 as unknown as string], /pixel\.palette\[0\]/],
  ])("refuses %s with 400 INVALID_REQUEST naming the field", (_what, palette, message) => {
    expect(() => resolvePalette(palette as string | string[])).toThrow(message);
    try {
      resolvePalette(palette as string | string[]);
    } catch (err) {
      expect(err).toMatchObject({ code: "INVALID_REQUEST", status: 400, details: { field: "pixel.palette" } });
    }
  });

  it("every built-in is a list of distinct #rrggbb colours", () => {
    for (const { colours } of Object.values(BUILTIN_PALETTES)) {
      expect(colours.every((c) => /^#[0-9a-f]{6}$/.test(c))).toBe(true);
      expect(new Set(colours).size).toBe(colours.length);
    }
  });
});
