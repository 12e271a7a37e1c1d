// The JSON shapes of fractal's resources (schemas in ./schemas.ts), shared
// by the REST API and the CLI's --json, so scripts see one shape.
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { exitStatusOf, type AgentClient, type ContainerExitResult, type ContainerSummary, type ExitResult, type LayerSummary } from "../client.js";
import type { VmStatus } from "../vm/manager.js";

export function vmJson(v: VmStatus): Record<string, unknown> {
  const r = v.record;
  const endpoints: Record<string, string> = {};
  for (const [k, e] of Object.entries(r.endpoints)) if (e) endpoints[k] = e;
  return { name: r.name, state: v.state, accel: r.accel, pid: r.pid, memMiB: r.memMiB, cpus: r.cpus, created: r.created, endpoints, tpm: r.boot?.tpm ?? false, attestation: r.attestation ?? null };
}

export function exitJson(e: ExitResult | ContainerExitResult): { exitCode: number; signal: number | null; oomKilled: boolean } {
  return { exitCode: exitStatusOf(e), signal: e.kind === "signaled" ? e.signal : null, oomKilled: "oomKilled" in e ? e.oomKilled : false };
}

export function containerJson(c: ContainerSummary): Record<string, unknown> {
  return {
    id: c.id,
    name: c.name,
    image: c.image,
    command: c.command,
    state: c.running ? "running" : "exited",
    createdMs: c.createdMs,
    finishedMs: c.finishedMs,
    exit: c.exit ? exitJson(c.exit) : null,
    pid: c.pid,
    tty: c.tty,
    interactive: c.interactive,
    mounts: c.mounts,
  };
}

export function layerJson(l: LayerSummary): Record<string, unknown> {
  return { ...l };
}

/** A container (by name, else id prefix) and its stack of images: `inspect` and GET …/containers/C. */
export async function containerDetail(client: AgentClient, ref: string, all?: ContainerSummary[]): Promise<Record<string, unknown>> {
  const list = all ?? (await client.containers(true));
  const c = list.find((x) => x.name === ref) ?? list.find((x) => x.id.startsWith(ref));
  if (!c) throw new FractalError(ErrorCode.CONTAINER_NOT_FOUND, `no such container: ${ref}`);
  return { container: containerJson(c), layers: (await client.layers(c.id)).map(layerJson) };
}
