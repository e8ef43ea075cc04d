import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loraMisfit, loraRefusedBy } from "./lora-fit";
import { inspectLora } from "./safetensors-header";

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "lora-fit-"));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A safetensors file with this header and no tensor data (only the header is ever read). */
function lora(name: string, shapes: Record<string, number[]>, metadata?: Record<string, string>): string {
  const header: Record<string, unknown> = {};
  for (const [key, shape] of Object.entries(shapes)) header[key] = { dtype: "F16", shape, data_offsets: [0, 0] };
  if (metadata) header.__metadata__ = metadata;
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const file = path.join(dir, `${name}.safetensors`);
  fs.writeFileSync(file, Buffer.concat([len, json]));
  return file;
}

describe("inspectLora", () => {
  it("reads format, rank, text width and architecture of a kohya SDXL LoRA from its attn2 to_k matrix", () => {
    const file = lora("kohya-xl", {
      "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": [8, 2048],
      "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight": [640, 8],
    });
    expect(inspectLora(file)).toEqual({ format: "kohya", rank: 8, crossAttentionDim: 2048, architecture: "sdxl", keys: 2 });
  });

  it("tells SDXL by a second text encoder or by its metadata, and SD otherwise", () => {
    const te2 = inspectLora(lora("te2", { "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": [16, 1280] }));
    expect([te2.architecture, te2.crossAttentionDim]).toEqual(["sdxl", null]);
    const sd15 = inspectLora(lora("sd15", { "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": [32, 768] }));
    expect(sd15).toEqual({ format: "diffusers", rank: 32, crossAttentionDim: 768, architecture: "sd", keys: 1 });
    const tagged = inspectLora(lora("tagged", { "unet.x.attn2.to_k.lora_A.weight": [4, 64] }, { "pixelai.base_architecture": "sdxl" }));
    expect([tagged.architecture, tagged.crossAttentionDim]).toEqual(["sdxl", 64]);
    const widthTag = inspectLora(lora("width-tag", { "unet.x.attn1.to_q.lora_A.weight": [4, 32] }, { "pixelai.cross_attention_dim": "32" }));
    expect(widthTag.crossAttentionDim).toBe(32);
  });

  it("refuses a safetensors file without LoRA keys, and a file that is not safetensors", () => {
    expect(() => inspectLora(lora("base", { "model.diffusion_model.out.weight": [4, 4] }))).toThrow(/no LoRA keys/);
    const garbage = path.join(dir, "garbage.safetensors");
    fs.writeFileSync(garbage, "definitely not safetensors");
    expect(() => inspectLora(garbage)).toThrow(/implausible header length/);
  });
});

describe("loraMisfit: the one fit rule", () => {
  const base = (name: string, architecture: string, crossAttentionDim: number | null) => ({ name, architecture, crossAttentionDim });
  const sd15 = base("sd15", "sd", 768);
  const sd2 = base("sd2", "sd", 1024);
  const sdxl = base("sdxl", "sdxl", 2048);
  const hubSd = base("hub-sd", "sd", null);

  it.each([
    ["SD 1.5 LoRA on SD 1.5", base("l", "sd", 768), sd15, true],
    ["SD 1.5 LoRA on SD 2", base("l", "sd", 768), sd2, false],
    ["SD LoRA on SDXL", base("l", "sd", 768), sdxl, false],
    ["SDXL LoRA on SDXL", base("l", "sdxl", 2048), sdxl, true],
    ["SDXL LoRA on SD 1.5", base("l", "sdxl", 2048), sd15, false],
    ["text-encoder-only SDXL LoRA (width unknown) on SDXL", base("l", "sdxl", null), sdxl, true],
    ["text-encoder-only SDXL LoRA (width unknown) on SD", base("l", "sdxl", null), sd15, false],
    ["SD LoRA on a hub SD model (width unknown)", base("l", "sd", 768), hubSd, true],
    // the same width does not make an architecture fit: the tiny models' widths could coincide, their layouts do not
    ["SD LoRA on SDXL of the same width", base("l", "sd", 64), base("tiny-xl", "sdxl", 64), false],
  ])("%s", (_case, l, b, fits) => {
    const misfit = loraMisfit(l, b);
    expect(misfit === null).toBe(fits);
    if (misfit) expect(misfit).toMatch(/^LoRA l \(.*\) does not fit model /);
  });
});

describe("loraRefusedBy", () => {
  const rules = [
    { pattern: "\\.hada_", what: "LoHa (hada_*) tensors" },
    { pattern: "(unclosed", what: "a rule JavaScript cannot compile" },
    { pattern: "^lora_unet_(input_blocks|middle_block|output_blocks)_", what: "original-SD block names" },
  ];

  it("names the first rule a tensor matches, with an example tensor", () => {
    const names = ["lora_unet_down_blocks_0_attn1_to_q.lora_down.weight", "lora_unet_input_blocks_4_1_proj_in.lora_up.weight"];
    expect(loraRefusedBy("mlx", "sgm-lora", names, rules)).toBe(
      "LoRA sgm-lora holds original-SD block names (e.g. lora_unet_input_blocks_4_1_proj_in.lora_up.weight), which the mlx engine cannot apply",
    );
    expect(loraRefusedBy("mlx", "loha", ["lora_unet_x.hada_w1_a"], rules)).toMatch(/^LoRA loha holds LoHa/);
  });

  it("passes plain LoRAs, and an engine that published no rules", () => {
    const names = ["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"];
    expect(loraRefusedBy("mlx", "plain", names, rules)).toBeNull();
    expect(loraRefusedBy("torch", "loha", ["lora_unet_x.hada_w1_a"], [])).toBeNull();
  });
});
