import fs from "node:fs";
import path from "node:path";
import { ENGINE_NAMES, isEngineName } from "./engine-names";

const repo = path.resolve(__dirname, "../..");

describe("engine names", () => {
  it("are one list: the runner contract (which the Python runner reads) and the OpenAPI enum say the same", () => {
    const contract = JSON.parse(fs.readFileSync(path.join(repo, "contract/runner-protocol.schema.json"), "utf8"));
    expect(contract.$defs.EngineName.enum).toEqual([...ENGINE_NAMES]);
    // tsoa writes the enum from the EngineName type. An engine list typed by hand in some DTO would appear as another
    // enum naming an engine: every place must point at EngineName instead.
    const spec = JSON.parse(fs.readFileSync(path.join(repo, "src/generated/swagger.json"), "utf8"));
    expect(spec.components.schemas.EngineName.enum).toEqual([...ENGINE_NAMES]);
    const handTyped: string[] = [];
    const walk = (node: unknown, where: string) => {
      if (typeof node !== "object" || node === null) return;
      const { enum: values } = node as { enum?: unknown[] };
      if (where !== "components.schemas.EngineName" && values?.includes("mlx")) handTyped.push(where);
      for (const [key, child] of Object.entries(node)) walk(child, `${where}.${key}`);
    };
    walk(spec.paths, "paths");
    walk(spec.components, "components");
    expect(handTyped).toEqual([]);
    expect(spec.components.schemas.DefaultEngineRequest.properties.engine.$ref).toBe("#/components/schemas/EngineName");
  });

  it("tell an engine name from anything else", () => {
    expect(ENGINE_NAMES.every(isEngineName)).toBe(true);
    for (const other of ["TORCH", "cuda", "", null, undefined, 5, ["torch"]]) expect(isEngineName(other)).toBe(false);
  });
});
