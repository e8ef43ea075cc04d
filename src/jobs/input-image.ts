import { createHash } from "node:crypto";
import { PNG } from "pngjs";
import { AppError } from "../backends/error-codes";

/**
 * The input image of a job (`inputImage`, a base64 PNG): how big it may be and what it must be. One owner of these
 * limits; the HTTP body limit (src/api/app.ts) and the /ws frame limit (src/api/ws/frames.ts) are derived from them.
 */
export const MAX_INPUT_IMAGE_BYTES = 8 * 1024 * 1024;
/** Per side, the API's largest size anywhere. */
export const MAX_INPUT_IMAGE_SIDE = 2048;
/** Every JSON body and /ws frame, the input image's base64 text aside. */
export const MAX_BODY_BYTES = 64 * 1024;
/** A JSON body or frame holding the largest image: base64 is 4/3 of the bytes, plus the ordinary limit for the rest. */
export const MAX_JOB_BODY_BYTES = Math.ceil(MAX_INPUT_IMAGE_BYTES / 3) * 4 + MAX_BODY_BYTES;

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const DATA_URL = /^data:image\/png;base64,/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export interface InputImage {
  png: Buffer;
  width: number;
  height: number;
  sha256: string;
}

/**
 * A job body or /ws frame of `rawBytes` that may hold an input image: true when what it holds beside the image's text
 * is over MAX_BODY_BYTES, so the image never widens the limit on anything else. `job` is the parsed job (or anything).
 */
export function overBodyLimit(rawBytes: number, job: unknown): boolean {
  if (rawBytes <= MAX_BODY_BYTES) return false;
  const image = typeof job === "object" && job !== null ? (job as { inputImage?: unknown }).inputImage : undefined;
  // base64 is ASCII and needs no JSON escapes: its length in the raw text is its string length
  return rawBytes - (typeof image === "string" ? image.length : 0) > MAX_BODY_BYTES;
}

function invalid(message: string): AppError {
  return new AppError("INVALID_REQUEST", message, { field: "inputImage" });
}

/**
 * Decodes and checks `inputImage`: base64 (a `data:image/png;base64,` prefix is allowed), at most MAX_INPUT_IMAGE_BYTES
 * (413 PAYLOAD_TOO_LARGE), a PNG by signature and header, each side 1..MAX_INPUT_IMAGE_SIDE, and fully decodable (CRCs,
 * compressed data). The side check reads the header before any pixel is decoded, so a small file that claims a huge
 * picture costs nothing.
 */
export async function readInputImage(encoded: string): Promise<InputImage> {
  const text = encoded.replace(DATA_URL, "").replace(/\s+/g, "");
  if (text.length === 0) throw invalid("inputImage is empty; send a base64-encoded PNG");
  if (text.length % 4 !== 0 || !BASE64.test(text)) throw invalid("inputImage is not base64; send a base64-encoded PNG");
  const size = (text.length / 4) * 3 - (text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0);
  if (size > MAX_INPUT_IMAGE_BYTES) {
    throw new AppError("PAYLOAD_TOO_LARGE", `inputImage is ${size} bytes; the limit is ${MAX_INPUT_IMAGE_BYTES} bytes`, {
      field: "inputImage",
      bytes: size,
      limit: MAX_INPUT_IMAGE_BYTES,
    });
  }
  const png = Buffer.from(text, "base64");
  // signature (8), IHDR length (4) and type (4), then width and height
  if (png.length < 24 || !png.subarray(0, 8).equals(PNG_SIGNATURE) || png.toString("latin1", 12, 16) !== "IHDR") {
    throw invalid("inputImage is not a PNG (only PNG input is supported)");
  }
  const width = png.readUInt32BE(16);
  const height = png.readUInt32BE(20);
  if (width < 1 || height < 1 || width > MAX_INPUT_IMAGE_SIDE || height > MAX_INPUT_IMAGE_SIDE) {
    throw invalid(`inputImage is ${width}x${height}; each side must be 1..${MAX_INPUT_IMAGE_SIDE}`);
  }
  await decodes(png);
  return { png, width, height, sha256: createHash("sha256").update(png).digest("hex") };
}

/** Full decode off the main path where pngjs allows it (zlib inflates on the thread pool). */
function decodes(png: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    new PNG({ checkCRC: true }).parse(png, (err) => (err ? reject(invalid(`inputImage is not a valid PNG: ${err.message}`)) : resolve()));
  });
}
