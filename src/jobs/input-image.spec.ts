import { PNG } from "pngjs";
import { AppError } from "../backends/error-codes";
import { MAX_INPUT_IMAGE_BYTES, MAX_INPUT_IMAGE_SIDE, readInputImage } from "./input-image";

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
