import { createHash } from "node:crypto";
import { PNG } from "pngjs";
import { AppError } from "../backends/error-codes";
import { pngSize } from "../infra/png-size";
import type { RawRgbaImage } from "./jobs.dto";

/**
 * The images a job may carry (`inputImage`, and an img2img job's `mask`): a base64 PNG, or raw RGBA as Aseprite's
 * `Image.bytes` gives it (`{width, height, rgba}`, turned into a PNG here); how big each may be and what it must be.
 * One owner of these limits; the HTTP body limit (src/api/app.ts) and the /ws frame limit (src/api/ws/frames.ts) are
 * derived from them.
 */
export const MAX_INPUT_IMAGE_BYTES = 8 * 1024 * 1024;
/** Per side, the API's largest size anywhere. */
export const MAX_INPUT_IMAGE_SIDE = 2048;
/** Every JSON body and /ws frame, the input image's base64 text aside. */
export const MAX_BODY_BYTES = 64 * 1024;
/** The image fields of a job; each may hold up to MAX_INPUT_IMAGE_BYTES. */
export const IMAGE_FIELDS = ["inputImage", "mask"] as const;
export type ImageField = (typeof IMAGE_FIELDS)[number];
/**
 * A JSON body or frame holding the largest images (an init image and its mask): base64 is 4/3 of the bytes, plus the
 * ordinary limit for the rest.
 */
export const MAX_JOB_BODY_BYTES = IMAGE_FIELDS.length * Math.ceil(MAX_INPUT_IMAGE_BYTES / 3) * 4 + MAX_BODY_BYTES;

/** What a job's image field holds: a base64 PNG or raw RGBA. */
export type ImageInput = string | RawRgbaImage;

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
  let images = 0;
  if (typeof job === "object" && job !== null) {
    for (const field of IMAGE_FIELDS) images += base64Length((job as Record<string, unknown>)[field]);
  }
  // base64 is ASCII and needs no JSON escapes: its length in the raw text is its string length
  return rawBytes - images > MAX_BODY_BYTES;
}

function base64Length(value: unknown): number {
  if (typeof value === "string") return value.length;
  const rgba = typeof value === "object" && value !== null ? (value as { rgba?: unknown }).rgba : undefined;
  return typeof rgba === "string" ? rgba.length : 0;
}

function invalid(message: string, field: ImageField = "inputImage"): AppError {
  return new AppError("INVALID_REQUEST", message, { field });
}

function tooLarge(size: number, field: ImageField): AppError {
  return new AppError("PAYLOAD_TOO_LARGE", `${field} is ${size} bytes; the limit is ${MAX_INPUT_IMAGE_BYTES} bytes`, {
    field,
    bytes: size,
    limit: MAX_INPUT_IMAGE_BYTES,
  });
}

/** Bytes that base64 `text` (already checked) decodes to. */
function decodedSize(text: string): number {
  return (text.length / 4) * 3 - (text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0);
}

/**
 * Either form of an image field, checked and as a PNG: a base64 PNG (readInputImage), or raw RGBA whose length must
 * be exactly width × height × 4 (at most MAX_INPUT_IMAGE_BYTES: 413), encoded to PNG here so that everything after
 * submission (the row, the runners) sees one format.
 */
export async function readImageInput(value: ImageInput, field: ImageField = "inputImage"): Promise<InputImage> {
  if (typeof value === "string") return readInputImage(value, field);
  const { width, height } = value;
  const text = value.rgba.replace(/\s+/g, "");
  if (text.length % 4 !== 0 || !BASE64.test(text)) throw invalid(`${field}.rgba is not base64`, field);
  const size = decodedSize(text);
  if (size > MAX_INPUT_IMAGE_BYTES) throw tooLarge(size, field);
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw invalid(`${field} is ${width}x${height}; width and height must be positive integers`, field);
  }
  if (width > MAX_INPUT_IMAGE_SIDE || height > MAX_INPUT_IMAGE_SIDE) {
    throw invalid(`${field} is ${width}x${height}; each side must be 1..${MAX_INPUT_IMAGE_SIDE}`, field);
  }
  if (size !== width * height * 4) {
    throw invalid(`${field}.rgba holds ${size} bytes; ${width}x${height} RGBA needs exactly ${width * height * 4}`, field);
  }
  const image = new PNG({ width, height });
  Buffer.from(text, "base64").copy(image.data);
  const png = await encodes(image);
  return { png, width, height, sha256: createHash("sha256").update(png).digest("hex") };
}

/** PNG-encodes with pngjs's stream, whose deflate runs on the thread pool (a 2048² sprite is not the event loop's). */
function encodes(image: PNG): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    image
      .pack()
      .on("data", (chunk: Buffer) => chunks.push(chunk))
      .on("end", () => resolve(Buffer.concat(chunks)))
      .on("error", reject);
  });
}

/**
 * Decodes and checks `inputImage`: base64 (a `data:image/png;base64,` prefix is allowed), at most MAX_INPUT_IMAGE_BYTES
 * (413 PAYLOAD_TOO_LARGE), a PNG by signature and header, each side 1..MAX_INPUT_IMAGE_SIDE, and fully decodable (CRCs,
 * compressed data). The side check reads the header before any pixel is decoded, so a small file that claims a huge
 * picture costs nothing.
 */
export async function readInputImage(encoded: string, field: ImageField = "inputImage"): Promise<InputImage> {
  const text = encoded.replace(DATA_URL, "").replace(/\s+/g, "");
  if (text.length === 0) throw invalid(`${field} is empty; send a base64-encoded PNG`, field);
  if (text.length % 4 !== 0 || !BASE64.test(text)) throw invalid(`${field} is not base64; send a base64-encoded PNG`, field);
  const size = decodedSize(text);
  if (size > MAX_INPUT_IMAGE_BYTES) throw tooLarge(size, field);
  const png = Buffer.from(text, "base64");
  const header = pngSize(png);
  if (!header) throw invalid(`${field} is not a PNG (only PNG input is supported)`, field);
  const { width, height } = header;
  if (width < 1 || height < 1 || width > MAX_INPUT_IMAGE_SIDE || height > MAX_INPUT_IMAGE_SIDE) {
    throw invalid(`${field} is ${width}x${height}; each side must be 1..${MAX_INPUT_IMAGE_SIDE}`, field);
  }
  await decodes(png, field);
  return { png, width, height, sha256: createHash("sha256").update(png).digest("hex") };
}

/** Full decode off the main path where pngjs allows it (zlib inflates on the thread pool). */
function decodes(png: Buffer, field: ImageField): Promise<void> {
  return new Promise((resolve, reject) => {
    new PNG({ checkCRC: true }).parse(png, (err) =>
      err ? reject(invalid(`${field} is not a valid PNG: ${err.message}`, field)) : resolve(),
    );
  });
}
