import { Controller, Get, Route, Tags } from "tsoa";
import { PRESETS } from "../presets/presets";

export interface PresetView {
  name: string;
  description: string;
  /** Base model: a registry name or a hub id. */
  model: string;
  lora: { name: string; strength: number } | null;
  steps: number;
  width: number;
  height: number;
  negativePrompt: string;
}

export interface PresetList {
  items: PresetView[];
}

@Route("presets")
@Tags("Models")
export class PresetsController extends Controller {
  /** Named recipes a job can start from (`preset` in POST /jobs and /ws submits); fields a request gives win. */
  @Get()
  async list(): Promise<PresetList> {
    return {
      items: PRESETS.map((p) => ({
        name: p.name,
        description: p.description,
        model: p.model,
        lora: p.lora ? { name: p.lora.name, strength: p.lora.strength } : null,
        steps: p.steps,
        width: p.width,
        height: p.height,
        negativePrompt: p.negativePrompt,
      })),
    };
  }
}
