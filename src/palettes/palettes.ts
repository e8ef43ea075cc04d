import { AppError } from "../backends/error-codes";

/**
 * Built-in palettes a job may name in `pixel.palette`, and the rule that turns a request's palette into the list of
 * colours the runner maps onto. The one owner of both: the runner only ever sees resolved "#rrggbb" lists.
 *
 * The colours are the palettes' published values (their authors' releases; the NES one is the widely used 2C02
 * emulator palette with its repeated blacks dropped, 55 colours).
 */
export const BUILTIN_PALETTES: Readonly<Record<string, { description: string; colours: readonly string[] }>> = {
  "pico-8": {
    description: "PICO-8 fantasy console, 16 colours",
    colours: hex("000000 1d2b53 7e2553 008751 ab5236 5f574f c2c3c7 fff1e8 ff004d ffa300 ffec27 00e436 29adff 83769c ff77a8 ffccaa"),
  },
  db16: {
    description: "DawnBringer's 16-colour palette",
    colours: hex("140c1c 442434 30346d 4e4a4e 854c30 346524 d04648 757161 597dce d27d2c 8595a1 6daa2c d2aa99 6dc2ca dad45e deeed6"),
  },
  db32: {
    description: "DawnBringer's 32-colour palette",
    colours: hex(
      "000000 222034 45283c 663931 8f563b df7126 d9a066 eec39a fbf236 99e550 6abe30 37946e 4b692f 524b24 323c39 3f3f74 " +
        "306082 5b6ee1 639bff 5fcde4 cbdbfc ffffff 9badb7 847e87 696a6a 595652 76428a ac3232 d95763 d77bba 8f974a 8a6f30",
    ),
  },
  "endesga-32": {
    description: "ENDESGA 32",
    colours: hex(
      "be4a2f d77643 ead4aa e4a672 b86f50 733e39 3e2731 a22633 e43b44 f77622 feae34 fee761 63c74d 3e8948 265c42 193c3e " +
        "124e89 0099db 2ce8f5 ffffff c0cbdc 8b9bb4 5a6988 3a4466 262b44 181425 ff0044 68386c b55088 f6757a e8b796 c28569",
    ),
  },
  gameboy: {
    description: "The original Game Boy's four greens",
    colours: hex("0f380f 306230 8bac0f 9bbc0f"),
  },
  nes: {
    description: "NES (2C02) palette, 55 distinct colours",
    colours: hex(
      "7c7c7c 0000fc 0000bc 4428bc 940084 a80020 a81000 881400 503000 007800 006800 005800 004058 000000 bcbcbc " +
        "0078f8 0058f8 6844fc d800cc e40058 f83800 e45c10 ac7c00 00b800 00a800 00a844 008888 f8f8f8 3cbcfc 6888fc " +
        "9878f8 f878f8 f85898 f87858 fca044 f8b800 b8f818 58d854 58f898 00e8d8 787878 fcfcfc a4e4fc b8b8f8 d8b8f8 " +
        "f8b8f8 f8a4c0 f0d0b0 fce0a8 f8d878 d8f878 b8f8b8 b8f8d8 00fcfc f8d8f8",
    ),
  },
};

export const MAX_PALETTE_COLOURS = 256;
const HEX_COLOUR = /^#?([0-9a-fA-F]{6})$/;

function hex(list: string): string[] {
  return list.split(/\s+/).map((c) => `#${c}`);
}

/**
 * A request's `pixel.palette` → lower-case "#rrggbb" colours, duplicates dropped, in the order given. A name picks a
 * built-in; a list is the artist's own (the leading "#" is optional). Anything else: 400 INVALID_REQUEST naming the
 * field and what would have been accepted.
 */
export function resolvePalette(palette: string | string[]): string[] {
  if (typeof palette === "string") {
    const builtin = BUILTIN_PALETTES[palette.toLowerCase()];
    if (!builtin) {
      throw invalid(
        `unknown palette ${JSON.stringify(palette)}; built-in palettes: ${Object.keys(BUILTIN_PALETTES).join(", ")}` +
          ', or send a list of "#rrggbb" colours',
      );
    }
    return [...builtin.colours];
  }
  if (palette.length === 0 || palette.length > MAX_PALETTE_COLOURS) {
    throw invalid(`pixel.palette must have 1..${MAX_PALETTE_COLOURS} colours, got ${palette.length}`);
  }
  const colours: string[] = [];
  palette.forEach((entry, i) => {
    const match = typeof entry === "string" ? HEX_COLOUR.exec(entry) : null;
    if (!match) throw invalid(`pixel.palette[${i}] is ${JSON.stringify(entry)}; expected a colour "#rrggbb"`);
    const colour = `#${match[1].toLowerCase()}`;
    if (!colours.includes(colour)) colours.push(colour);
  });
  return colours;
}

function invalid(message: string): AppError {
  return new AppError("INVALID_REQUEST", message, { field: "pixel.palette" });
}
