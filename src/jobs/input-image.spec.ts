import { PNG } from "pngjs";
import { AppError } from "../backends/error-codes";
import { MAX_BODY_BYTES, MAX_INPUT_IMAGE_BYTES, MAX_INPUT_IMAGE_SIDE, overBodyLimit, readImageInput, readInputImage } from "./input-image";

function png(width: number, height: number): Buffer {
  const image = new PNG({ width, height });
  image.data.fill(200);
  return PNG.sync.write(image);
}

async function refusal(encoded: string): Promise<AppError> {
  const err = await readInputImage(encoded).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  return err as AppError;
}

describe("readInputImage", () => {
  it("reads a PNG's size and hash, with or without a data URL prefix", async () => {
    const bytes = png(40, 30);
    const read = await readInputImage(bytes.toString("base64"));
    expect([read.width, read.height, read.png.equals(bytes)]).toEqual([40, 30, true]);
    expect(read.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect((await readInputImage(`data:image/png;base64,${bytes.toString("base64")}`)).width).toBe(40);
  });

  it.each([
    ["empty", "", /empty/],
    ["not base64", "!!!!", /not base64/],
    ["not a PNG", Buffer.from("GIF89a and some more bytes here").toString("base64"), /not a PNG/],
    ["a PNG cut short", png(40, 30).subarray(0, 60).toString("base64"), /not a valid PNG/],
  ])("%s → 400 INVALID_REQUEST naming inputImage", async (_name, encoded, message) => {
    const err = await refusal(encoded);
    expect([err.code, err.status, err.details?.field]).toEqual(["INVALID_REQUEST", 400, "inputImage"]);
    expect(err.message).toMatch(message);
  });

  it("a corrupted PNG (bad CRC) is refused", async () => {
    const bytes = Buffer.from(png(40, 30));
    bytes[bytes.length - 16] ^= 0xff; // the IDAT chunk's CRC (IEND is the last 12 bytes)
    expect((await refusal(bytes.toString("base64"))).message).toMatch(/not a valid PNG/);
  });

  it("a header claiming a side over the limit is refused before decoding", async () => {
    const bytes = Buffer.from(png(8, 8));
    bytes.writeUInt32BE(MAX_INPUT_IMAGE_SIDE + 1, 16);
    expect((await refusal(bytes.toString("base64"))).message).toMatch(`${MAX_INPUT_IMAGE_SIDE + 1}x8`);
  });

  it("more than MAX_INPUT_IMAGE_BYTES → 413 PAYLOAD_TOO_LARGE with the limit", async () => {
    const err = await refusal(Buffer.alloc(MAX_INPUT_IMAGE_BYTES + 1).toString("base64"));
    expect([err.code, err.status, err.details?.limit]).toEqual(["PAYLOAD_TOO_LARGE", 413, MAX_INPUT_IMAGE_BYTES]);
  });
});

describe("readImageInput: raw RGBA", () => {
  function raw(width: number, height: number, bytes = width * height * 4) {
    const rgba = Buffer.alloc(bytes);
    for (let i = 0; i < bytes; i++) rgba[i] = (i * 37) % 256;
    return { width, height, rgba: rgba.toString("base64") };
  }

  async function rawRefusal(value: { width: number; height: number; rgba: string }, field: "inputImage" | "mask" = "inputImage") {
    const err = await readImageInput(value, field).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(AppError);
    return err as AppError;
  }

  it("becomes a PNG holding exactly those pixels", async () => {
    const value = raw(5, 3);
    const read = await readImageInput(value);
    expect([read.width, read.height]).toEqual([5, 3]);
    const decoded = PNG.sync.read(read.png);
    expect(decoded.data.equals(Buffer.from(value.rgba, "base64"))).toBe(true);
    // and the PNG form of the same picture reads the same
    expect((await readImageInput(read.png.toString("base64"))).sha256).toBe(read.sha256);
  });

  it.each([
    ["one byte short", raw(4, 4, 63), /holds 63 bytes; 4x4 RGBA needs exactly 64/],
    ["a row too many", raw(4, 4, 80), /holds 80 bytes/],
    ["not base64", { width: 2, height: 2, rgba: "!!!!" }, /not base64/],
    ["a side over the limit", { width: MAX_INPUT_IMAGE_SIDE + 1, height: 1, rgba: "AAAA" }, /each side/],
  ])("%s → 400 INVALID_REQUEST naming the field", async (_name, value, message) => {
    const err = await rawRefusal(value, "mask");
    expect([err.code, err.status, err.details?.field]).toEqual(["INVALID_REQUEST", 400, "mask"]);
    expect(err.message).toMatch(message);
  });

  it("more than MAX_INPUT_IMAGE_BYTES of pixels → 413 PAYLOAD_TOO_LARGE, before the size check", async () => {
    const err = await rawRefusal({ width: 1, height: 1, rgba: Buffer.alloc(MAX_INPUT_IMAGE_BYTES + 4).toString("base64") });
    expect([err.code, err.status, err.details?.field]).toEqual(["PAYLOAD_TOO_LARGE", 413, "inputImage"]);
  });

  it("the body limit leaves out both image fields' base64, in either form", () => {
    const big = "A".repeat(MAX_BODY_BYTES * 2);
    expect(overBodyLimit(big.length * 2 + 100, { inputImage: big, mask: { width: 1, height: 1, rgba: big } })).toBe(false);
    expect(overBodyLimit(big.length * 2 + 100, { inputImage: big })).toBe(true);
  });
});
