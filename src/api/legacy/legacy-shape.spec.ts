import { isLegacyPath, legacyFailure } from "./legacy-shape";

describe("isLegacyPath", () => {
  it.each(["/generate", "/set_engine", "/load_model", "/loras", "/loras/", "/progress/01abc", "/cancel/01abc"])("%s is the seed's", (p) => {
    expect(isLegacyPath(p)).toBe(true);
  });

  // /health and /models are v1 routes that carry the old fields: their errors stay in the v1 shape
  it.each(["/health", "/models", "/jobs", "/progress", "/progress/a/b", "/generate/x", "/loras.json", "/presets"])("%s is not", (p) => {
    expect(isLegacyPath(p)).toBe(false);
  });
});

describe("legacyFailure", () => {
  it("is {success:false, error, code} plus what rides along", () => {
    expect(legacyFailure("FORBIDDEN", "no", { generation_id: "x" })).toEqual({
      success: false,
      error: "no",
      code: "FORBIDDEN",
      generation_id: "x",
    });
  });
});
