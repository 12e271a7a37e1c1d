// cp: a tar of a path streamed out of a container's root (or the guest's),
// or a tar streamed in and unpacked there. The root is the container's
// root as its processes see it; every path resolves inside it.
import path from "node:path";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import type { ResponseBody, Session } from "../../proto/session.js";
import { chunksOf } from "../../proto/stream.js";
import { copyTarget, packPath, resolveIn, unpackInto } from "../../oci/copy.js";
import type { CopyCommand } from "../commands.js";
import type { ContainerManager } from "../containers/manager.js";

export class CopyHandlers {
  constructor(
    private readonly session: Session,
    private readonly containers: ContainerManager,
  ) {}

  async copy(c: CopyCommand): Promise<ResponseBody> {
    // Open the stream first: a copy in may already be sending.
    const input = c.into ? this.session.openIn(c.stream) : undefined;
    const output = c.into ? undefined : this.session.openOut(c.stream);
    try {
      const ctr = c.container ? this.containers.find(c.container) : undefined;
      if (ctr && !ctr.running) throw new FractalError(ErrorCode.NOT_RUNNING, `container ${ctr.name} is not running (its root is mounted only while it runs)`);
      const root = ctr ? ctr.root : "/";
      const shown = ctr ? `${ctr.name}:${c.path}` : c.path;
      if (output) {
        const { real } = resolveIn(root, c.path, shown);
        const name = path.posix.basename(c.path.replace(/\/+$/, "")) || ".";
        for await (const chunk of packPath(real, name === "/" ? "." : name, real === root)) await output.write(chunk as Uint8Array);
        output.end();
      } else {
        const { destRel, renameTop } = copyTarget(root, c.path, shown);
        await unpackInto(chunksOf(input!), root, destRel, renameTop);
      }
    } catch (err) {
      input?.reset("cp failed");
      output?.fail(err instanceof FractalError ? err : new FractalError(ErrorCode.INTERNAL, String(err)));
      throw err;
    }
    return { ok: {} };
  }
}
