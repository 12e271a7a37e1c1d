// Images stacked into running containers (fractal-host layer add, rm, ls).
import type { ResponseBody, Session } from "../../proto/session.js";
import type { LayerInfo } from "../../proto/wire.js";
import type { LayerAddCommand } from "../commands.js";
import type { LayerRecord } from "../containers/live-layers.js";
import type { ContainerManager } from "../containers/manager.js";
import { progressLines } from "./progress.js";

function toWire(l: LayerRecord): LayerInfo {
  return { id: l.id, image: l.image, digest: l.digest, diffIds: l.diffIds, at: l.at, readonly: l.readonly, addedMs: l.addedMs, how: l.how, removable: l.how === "live" };
}

export class LayerHandlers {
  constructor(
    private readonly session: Session,
    private readonly containers: ContainerManager,
  ) {}

  async add(cmd: LayerAddCommand): Promise<ResponseBody> {
    const progress = progressLines(this.session, cmd.progressStream);
    try {
      return { layer: toWire(await this.containers.layerAdd(cmd, progress.line)) };
    } finally {
      progress.end();
    }
  }

  async remove(container: string, layer: string): Promise<ResponseBody> {
    await this.containers.layerRemove(container, layer);
    return { ok: {} };
  }

  list(container: string): ResponseBody {
    return { layers: { layers: this.containers.layerList(container).map(toWire) } };
  }
}
