import { Controller, Get, Route, Tags } from "tsoa";
import { BUILTIN_PALETTES } from "../palettes/palettes";

export interface PaletteView {
  /** What `pixel.palette` takes to use it. */
  name: string;
  description: string;
  /** "#rrggbb", in the palette's published order. */
  colours: string[];
}

export interface PaletteList {
  items: PaletteView[];
}

@Route("palettes")
@Tags("Jobs")
export class PalettesController extends Controller {
  /** Built-in palettes a job can name in `pixel.palette` (a list of "#rrggbb" colours works as well). */
  @Get()
  async list(): Promise<PaletteList> {
    return {
      items: Object.entries(BUILTIN_PALETTES).map(([name, p]) => ({ name, description: p.description, colours: [...p.colours] })),
    };
  }
}
