/**
 * Every figure README's Benchmarks section quotes must be found in the committed result file it names
 * (bench/results/*.json); readme-figures.spec.ts runs this in `make test`. The rules, so a README edit knows them:
 * - a paragraph or table takes its figures from the last `bench/results/<name>.json` named before it in the section
 *   (a `###` heading starts afresh: name the file again under it);
 * - in a table's body (not the header, not the first column), a cell that starts with a number holds figures: every
 *   number before its first "(" (what follows in parentheses is a remark); in prose a figure is a number followed by a
 *   unit (ms, s, s/img, MB, MiB, GB, GiB, KiB, jobs/s, %), written as a ratio (×1.37), or following "load average"; both
 *   ends of a range count ("14–25 ms", "236 → 267 MiB", "load average 6.5 to 9.7");
 * - a figure with d decimals is found when some number in that file rounds to it at d decimals ("10 000" = 10000).
 */

export interface Figure {
  text: string;
  value: number;
  decimals: number;
  source: string | undefined;
  line: number;
}

const NUMBER = String.raw`\d{1,3}(?:[ \u2009\u202f]\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?`;
const UNIT = String.raw`(?:ms|s/img|s|MB|MiB|GB|GiB|KiB|jobs/s|%)(?![A-Za-z])`;
/** A range's separator: "14–25 ms", "236 → 267 MiB", "6.5 to 9.7". */
const TO = String.raw`\s?(?:–|→|to)\s?`;
const PROSE_FIGURE = new RegExp(
  String.raw`(?<![\d\w.])×\s?(${NUMBER})|(?<![\d\w.×-])(${NUMBER})(?:${TO}(${NUMBER}))?\s?${UNIT}|load average (${NUMBER})(?:${TO}(${NUMBER}))?`,
  "g",
);
const CELL_NUMBER = new RegExp(String.raw`(?<![\d\w.×-])(${NUMBER})(?![\d\w×])`, "g");
const SOURCE = /bench\/results\/[\w.-]+\.json/g;

/** The lines of README's "## Benchmarks" section (up to the next "## " heading), with their 1-based line numbers. */
export function benchmarksSection(readme: string): Array<{ text: string; line: number }> {
  const lines = readme.split("\n");
  const start = lines.findIndex((l) => /^## Benchmarks\s*$/.test(l));
  if (start < 0) return [];
  const out: Array<{ text: string; line: number }> = [];
  for (let i = start + 1; i < lines.length && !/^## /.test(lines[i]); i++) out.push({ text: lines[i], line: i + 1 });
  return out;
}

function parseNumber(text: string): { value: number; decimals: number } {
  const plain = text.replace(/[ \u2009\u202f]/g, "");
  const dot = plain.indexOf(".");
  return { value: Number(plain), decimals: dot < 0 ? 0 : plain.length - dot - 1 };
}

/** Strips inline code and link targets: a path or command is not a figure. */
function prose(text: string): string {
  return text.replace(/`[^`]*`/g, " ").replace(/\]\([^)]*\)/g, "]");
}

/** The figures README quotes in its Benchmarks section, each with the result file it must come from. */
export function quotedFigures(readme: string): Figure[] {
  const section = benchmarksSection(readme);
  const figures: Figure[] = [];
  let source: string | undefined;
  for (let i = 0; i < section.length; i++) {
    const { text, line } = section[i];
    if (/^#{3,} /.test(text)) {
      source = undefined;
      continue;
    }
    const isTable = text.trimStart().startsWith("|");
    const isSeparator = /^\s*\|[\s|:-]+\|\s*$/;
    if (isTable) {
      // The header row (followed by the separator) and the separator hold labels; so does each row's first column.
      if (!isSeparator.test(text) && !isSeparator.test(section[i + 1]?.text ?? "")) {
        const cells = text.split("|").slice(2);
        for (const cell of cells) {
          const plain = prose(cell).replace(/\*\*/g, "").trim();
          if (!/^×?\d/.test(plain)) continue;
          const figuresPart = plain.split("(")[0];
          for (const m of figuresPart.matchAll(CELL_NUMBER)) figures.push({ text: m[1], ...parseNumber(m[1]), source, line });
        }
      }
      source = [source, ...(text.match(SOURCE) ?? [])].pop();
      continue;
    }
    // In prose a source named mid-line applies from there on.
    const parts = text.split(SOURCE);
    const sources = text.match(SOURCE) ?? [];
    parts.forEach((part, k) => {
      for (const m of prose(part).matchAll(PROSE_FIGURE)) {
        for (const raw of m.slice(1).filter((g): g is string => g !== undefined)) figures.push({ text: raw, ...parseNumber(raw), source, line });
      }
      if (k < sources.length) source = sources[k];
    });
  }
  return figures;
}

/** Every number anywhere in a parsed result file. */
export function numbersIn(value: unknown, out: number[] = []): number[] {
  if (typeof value === "number" && Number.isFinite(value)) out.push(value);
  else if (Array.isArray(value)) for (const v of value) numbersIn(v, out);
  else if (value && typeof value === "object") for (const v of Object.values(value)) numbersIn(v, out);
  return out;
}

export function isBacked(figure: Figure, numbers: readonly number[]): boolean {
  const f = 10 ** figure.decimals;
  return numbers.some((n) => Math.abs(Math.round(n * f) / f - figure.value) < 0.5 / f / 1000);
}

/** What a result file must carry besides its figures, so a reader can judge them: when, on what, how busy. */
export function missingMetadata(result: Record<string, unknown>): string[] {
  const missing: string[] = [];
  if (typeof result.timestamp !== "string" || Number.isNaN(Date.parse(result.timestamp))) missing.push("timestamp (ISO date)");
  const machine = result.machine as Record<string, unknown> | undefined;
  if (!machine || typeof machine !== "object") missing.push("machine");
  else if (!Object.keys(machine).some((k) => /^loadAvg/.test(k) && typeof machine[k] === "number")) missing.push("machine.loadAvg*");
  const versions = result.versions as Record<string, unknown> | undefined;
  if (!versions || typeof versions !== "object" || Object.keys(versions).length === 0) missing.push("versions");
  return missing;
}
