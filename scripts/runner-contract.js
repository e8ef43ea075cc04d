#!/usr/bin/env node
// Everything derived from contract/runner-protocol.schema.json, the one Node ↔ runner contract:
//   node scripts/runner-contract.js types [--check] → src/generated/runner-protocol.ts (run by `npm run generate`)
//   node scripts/runner-contract.js docs [--check]  → the field tables in docs/runner-protocol.md
//   node scripts/runner-contract.js undocumented    → $defs the doc does not render (JSON list)
// --check writes nothing and exits 1 when the file is stale.
const fs = require("node:fs");
const path = require("node:path");

const ROOT = path.resolve(__dirname, "..");
const SCHEMA_PATH = path.join(ROOT, "contract", "runner-protocol.schema.json");
const TYPES_PATH = path.join(ROOT, "src", "generated", "runner-protocol.ts");
const DOC_PATH = path.join(ROOT, "docs", "runner-protocol.md");

function loadSchema() {
  return JSON.parse(fs.readFileSync(SCHEMA_PATH, "utf8"));
}

async function typesSource(schema = loadSchema()) {
  const { compile } = require("json-schema-to-typescript");
  const banner = "/* Generated from contract/runner-protocol.schema.json by scripts/runner-contract.js; do not edit. */";
  // unreachableDefinitions: every $defs entry becomes an exported type, not only those the (empty) root refers to.
  return compile(schema, "RunnerProtocol", { bannerComment: banner, unreachableDefinitions: true, style: { printWidth: 140 } });
}

const refName = (ref) => ref.replace("#/$defs/", "");

/** A short type expression for a table cell: `$ref` names link to their own table when the doc has one. */
function typeOf(node) {
  if (node.$ref) return `\`${refName(node.$ref)}\``;
  if ("const" in node) return `\`${JSON.stringify(node.const)}\``;
  if (node.enum) return node.enum.map((v) => `\`${JSON.stringify(v)}\``).join(" \\| ");
  if (node.anyOf) return node.anyOf.map(typeOf).join(" \\| ");
  const types = [].concat(node.type ?? []);
  return types
    .map((t) => {
      if (t === "array") return `${node.items ? typeOf(node.items) : "any"}[]`;
      if (t === "object" && node.additionalProperties && typeof node.additionalProperties === "object")
        return `{name: ${typeOf(node.additionalProperties).replace(/`/g, "")}}`;
      return t;
    })
    .join(" \\| ");
}

function constraints(node) {
  const parts = [];
  if (node.minimum !== undefined) parts.push(`≥ ${node.minimum}`);
  if (node.maximum !== undefined) parts.push(`≤ ${node.maximum}`);
  if (node.multipleOf !== undefined) parts.push(`multiple of ${node.multipleOf}`);
  if (node.minItems !== undefined && node.minItems === node.maxItems) parts.push(`${node.minItems} items`);
  else if (node.minItems !== undefined || node.maxItems !== undefined) parts.push(`${node.minItems ?? 0}–${node.maxItems ?? "∞"} items`);
  if (node.minLength) parts.push("non-empty");
  if (node.pattern) parts.push(`matches \`${node.pattern}\``);
  if (node.required && node.type === "object") parts.push(`needs ${node.required.map((r) => `\`${r}\``).join(", ")}`);
  return parts.join(", ");
}

function cell(text) {
  return String(text).replace(/\|/g, "\\|").replace(/\n/g, " ");
}

/** The op table: each op, its request definition and the definition of its result payload. */
function renderOps(schema) {
  const lines = ["| op | request | result payload (next to `id` and `event`) |", "|---|---|---|"];
  for (const [op, ref] of Object.entries(schema.$defs.RunnerOps.properties)) {
    const pair = schema.$defs[refName(ref.$ref)].properties;
    lines.push(`| \`${op}\` | \`${refName(pair.request.$ref)}\` | \`${refName(pair.result.$ref)}\` |`);
  }
  return lines.join("\n");
}

/** One markdown table for an object definition (or a one-line note for an enum or union). */
function renderDef(schema, name) {
  const def = schema.$defs[name];
  if (!def) throw new Error(`docs/runner-protocol.md names ${name}, which is not in the schema's $defs`);
  if (name === "RunnerOps") return renderOps(schema);
  const lines = [];
  if (def.description) lines.push(def.description, "");
  if (def.type !== "object") {
    lines.push(`\`${name}\`: ${typeOf(def)}`);
    return lines.join("\n");
  }
  const required = new Set(def.required ?? []);
  lines.push("| field | type | required | default | constraints | meaning |", "|---|---|---|---|---|---|");
  for (const [field, prop] of Object.entries(def.properties ?? {})) {
    const dflt = "default" in prop ? `\`${JSON.stringify(prop.default)}\`` : "";
    lines.push(
      `| \`${field}\` | ${typeOf(prop)} | ${required.has(field) ? "yes" : ""} | ${dflt} | ${cell(constraints(prop))} | ${cell(prop.description ?? "")} |`,
    );
  }
  if (def.dependentRequired) {
    const groups = Object.entries(def.dependentRequired).map(([k, v]) => `\`${k}\` needs ${v.map((x) => `\`${x}\``).join(", ")}`);
    lines.push("", `Together or not at all: ${groups.join("; ")}.`);
  }
  if (def.if) lines.push("", "`device` must be one of its `engine`'s devices (`TorchDevice` for torch, `MlxDevice` for mlx).");
  if (def.additionalProperties === false) lines.push("", "No other fields.");
  return lines.join("\n");
}

const BLOCK = /<!-- generated: (\w+) -->\n[\s\S]*?<!-- end generated -->/g;

/** The doc with every `<!-- generated: Name -->…<!-- end generated -->` block rendered from the schema. */
function renderDoc(doc, schema = loadSchema()) {
  return doc.replace(BLOCK, (_m, name) => `<!-- generated: ${name} -->\n${renderDef(schema, name)}\n<!-- end generated -->`);
}

/** $defs names the doc renders, so a test can tell a definition the doc forgot. */
function documentedDefs(doc) {
  return [...doc.matchAll(BLOCK)].map((m) => m[1]);
}

async function main(argv) {
  const [command, flag] = argv;
  if (command === "types") {
    const fresh = await typesSource();
    if (flag === "--check") {
      if (fs.existsSync(TYPES_PATH) && fs.readFileSync(TYPES_PATH, "utf8") === fresh) return 0;
      console.error("src/generated/runner-protocol.ts is stale: run npm run generate");
      return 1;
    }
    fs.mkdirSync(path.dirname(TYPES_PATH), { recursive: true });
    fs.writeFileSync(TYPES_PATH, fresh);
    return 0;
  }
  if (command === "undocumented") {
    // $defs the doc has no generated block for (the request/result pairs are covered by the RunnerOps table).
    const documented = new Set(documentedDefs(fs.readFileSync(DOC_PATH, "utf8")));
    const missing = Object.keys(loadSchema().$defs).filter((name) => !documented.has(name) && !/Op$/.test(name));
    console.log(JSON.stringify(missing));
    return 0;
  }
  if (command === "docs") {
    const doc = fs.readFileSync(DOC_PATH, "utf8");
    const fresh = renderDoc(doc);
    if (flag === "--check") {
      if (fresh === doc) return 0;
      console.error("docs/runner-protocol.md is stale: run node scripts/runner-contract.js docs");
      return 1;
    }
    fs.writeFileSync(DOC_PATH, fresh);
    return 0;
  }
  console.error("usage: node scripts/runner-contract.js types [--check] | docs [--check] | undocumented");
  return 2;
}

module.exports = { loadSchema, typesSource, renderDoc, renderDef, documentedDefs, SCHEMA_PATH, DOC_PATH };

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
