import { PNG } from "pngjs";
import { base64Slot, frameWithBase64, frameWithBase64Parts, INLINE_MAX_PIXELS, RgbaEncoder } from "./rgba-encoder";

function png(width: number, height: number): { png: Buffer; rgba: Buffer } {
  const image = new PNG({ width, height });
  for (let i = 0; i < image.data.length; i++) image.data[i] = (i * 37 + (i >> 4)) & 255;
  return { png: PNG.sync.write(image), rgba: Buffer.from(image.data) };
}

describe("RgbaEncoder", () => {
  const encoder = new RgbaEncoder();
  afterAll(() => encoder.close());
  const threadOf = (e: RgbaEncoder) => (e as unknown as { thread?: unknown }).thread;

  it("decodes a small picture where it is asked, into the base64 of the raw RGBA, without starting its thread", async () => {
    const fresh = new RgbaEncoder();
    const a = png(7, 5);
    const b = png(128, 128); // INLINE_MAX_PIXELS exactly
    const [ea, eb] = await Promise.all([fresh.encode(a.png), fresh.encode(b.png)]);
    expect(ea).toMatchObject({ width: 7, height: 5 });
    expect(eb).toMatchObject({ width: 128, height: 128 });
    expect(ea.base64.toString("latin1")).toBe(a.rgba.toString("base64"));
    expect(eb.base64.toString("latin1")).toBe(b.rgba.toString("base64"));
    expect(threadOf(fresh)).toBeUndefined();
    await fresh.close();
  });

  it("decodes larger pictures on its thread, for requests in flight together", async () => {
    expect(129 * 128).toBeGreaterThan(INLINE_MAX_PIXELS);
    const a = png(129, 128);
    const b = png(300, 60);
    const [ea, eb] = await Promise.all([encoder.encode(a.png), encoder.encode(b.png)]);
    expect(threadOf(encoder)).toBeDefined();
    expect(ea).toMatchObject({ width: 129, height: 128 });
    expect(eb).toMatchObject({ width: 300, height: 60 });
    expect(ea.base64.toString("latin1")).toBe(a.rgba.toString("base64"));
    expect(eb.base64.toString("latin1")).toBe(b.rgba.toString("base64"));
  });

  it("rejects what is not a PNG, or a small PNG whose data is broken, and keeps working", async () => {
    await expect(encoder.encode(Buffer.from("not a png"))).rejects.toThrow(/could not be decoded/);
    const broken = Buffer.from(png(4, 4).png);
    broken.fill(0, 40, broken.length - 12); // header intact, compressed data gone
    await expect(encoder.encode(broken)).rejects.toThrow(/could not be decoded/);
    expect((await encoder.encode(png(2, 2).png)).width).toBe(2);
    expect((await encoder.encode(png(200, 100).png)).width).toBe(200);
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

describe("frameWithBase64Parts", () => {
  it("places each part at its slot, nested in arrays too, as JSON.stringify would", () => {
    const [a, b] = [Buffer.from("AAAA", "latin1"), Buffer.from("/w==", "latin1")];
    const frame = {
      type: "completed",
      rgbaBase64: base64Slot(0),
      candidates: [
        { index: 0, rgbaBase64: base64Slot(2) },
        { index: 1, rgbaBase64: base64Slot(1) },
      ],
    };
    const out = JSON.parse(frameWithBase64Parts(frame, [a, b, a]).toString("utf8"));
    expect(out).toEqual({
      type: "completed",
      rgbaBase64: "AAAA",
      candidates: [
        { index: 0, rgbaBase64: "AAAA" },
        { index: 1, rgbaBase64: "/w==" },
      ],
    });
  });

  it("refuses a template with a slot missing, repeated or unknown, and leaves look-alike text alone", () => {
    expect(() => frameWithBase64Parts({ a: base64Slot(0) }, [Buffer.from("A"), Buffer.from("B")])).toThrow(/ambiguous/);
    expect(() => frameWithBase64Parts({ a: base64Slot(0), b: base64Slot(0) }, [Buffer.from("A")])).toThrow(/ambiguous/);
    expect(() => frameWithBase64Parts({ a: base64Slot(3) }, [Buffer.from("A")])).toThrow(/ambiguous/);
    const text = "\\u0000base64:0\\u0000";
    expect(JSON.parse(frameWithBase64Parts({ note: text, a: base64Slot(0) }, [Buffer.from("QQ==")]).toString())).toEqual({
      note: text,
      a: "QQ==",
    });
  });
});
