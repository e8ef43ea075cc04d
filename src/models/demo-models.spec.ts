import { isDemoOnly } from "./demo-models";

const row = (name: string, kind = "base", origin = "local", snapshotPath: string | null = null) => ({ name, kind, origin, snapshotPath });

describe("isDemoOnly", () => {
  it("is true with only the tiny demo models (LoRAs do not count) and with nothing at all", () => {
    expect(isDemoOnly([row("tiny-sd"), row("tiny-sdxl"), row("pixel-xl", "lora", "hub", ".hub/x")])).toBe(true);
    expect(isDemoOnly([])).toBe(true);
  });

  it("ends with a registered local model or an installed hub model", () => {
    expect(isDemoOnly([row("tiny-sd"), row("my-model")])).toBe(false);
    expect(isDemoOnly([row("tiny-sd"), row("sdxl", "base", "hub", ".hub/stabilityai/x/abc")])).toBe(false);
  });

  it("does not end while a hub model is still installing", () => {
    expect(isDemoOnly([row("tiny-sd"), row("sdxl", "base", "hub", null)])).toBe(true);
  });
});
