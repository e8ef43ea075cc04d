import { PNG } from "pngjs";
import { frameWithBase64, RgbaEncoder } from "./rgba-encoder";

function png(width: number, height: number): { png: Buffer; rgba: Buffer } {
  const image = new PNG({ width, height });
  for (let i = 0; i < image.data.length; i++) image.data[i] = (i * 37 + (i >> 4)) & 255;
  return { png: PNG.sync.write(image), rgba: Buffer.from(image.data) };
}

describe("RgbaEncoder", () => {
  const encoder = new RgbaEncoder();
  afterAll(() => encoder.close());

  it("decodes on its thread into the base64 of the raw RGBA, for requests in flight together", async () => {
    const a = png(7, 5);
    const b = png(16, 3);
    const [ea, eb] = await Promise.all([encoder.encode(a.png), encoder.encode(b.png)]);
    expect(ea).toMatchObject({ width: 7, height: 5 });
    expect(eb).toMatchObject({ width: 16, height: 3 });
    expect(ea.base64.toString("latin1")).toBe(a.rgba.toString("base64"));
    expect(eb.base64.toString("latin1")).toBe(b.rgba.toString("base64"));
  });

  it("rejects what is not a PNG, and keeps working", async () => {
    await expect(encoder.encode(Buffer.from("not a png"))).rejects.toThrow(/could not be decoded/);
    expect((await encoder.encode(png(2, 2).png)).width).toBe(2);
  });
});

describe("frameWithBase64", () => {
  it("is the JSON that JSON.stringify would give, the field in its place", () => {
    const base64 = Buffer.from("AAEC/w==", "latin1");
    const frame = { type: "completed", id: "j1", width: 1, height: 1, rgbaBase64: null, seed: 3, pixel: { note: 'a "q"' } };
    const out = frameWithBase64(frame, "rgbaBase64", base64).toString("utf8");
    expect(out).toBe(JSON.stringify({ ...frame, rgbaBase64: "AAEC/w==" }));
  });
});
