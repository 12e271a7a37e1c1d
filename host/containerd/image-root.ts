// A container root from the host containerd's image store, for `run
// --containerd`: the image's manifest and config from containerd's content
// store, its layers as the snapshots containerd already unpacked (named by
// ChainID), and a fresh writable snapshot on top — prepared under a lease,
// so containerd's garbage collector leaves it alone until we remove it.
// Nothing is copied and no second store is made.
import { createHash, randomBytes } from "node:crypto";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import type { RunConfig } from "../../oci/store.js";
import { containerd } from "./gen/containerd.js";
import { GrpcClient } from "./grpc.js";
import { preparedRoot, type PreparedRoot } from "./shim/translate.js";

const svc = containerd.services;
const INDEX_TYPES = new Set(["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"]);

export interface ContainerdImageRoot extends PreparedRoot {
  /** The image's name as containerd knows it. */
  name: string;
  config: RunConfig;
  /** Removes the writable snapshot and its lease. */
  release(): Promise<void>;
}

interface Descriptor {
  mediaType: string;
  digest: string;
  platform?: { os?: string; architecture?: string };
}

/** ChainID of a stack of diff_ids (the OCI image spec's definition), which names containerd's snapshots. */
export function chainId(diffIds: string[]): string {
  return diffIds.slice(1).reduce((chain, d) => `sha256:${createHash("sha256").update(`${chain} ${d}`).digest("hex")}`, diffIds[0]!);
}

/** The names `docker.io/library/busybox:latest` may go by in containerd, most specific first. */
function candidates(ref: string): string[] {
  const tagged = /:[^/]+$/.test(ref) || ref.includes("@") ? ref : `${ref}:latest`;
  const out = [ref, tagged];
  if (!tagged.split("/")[0]!.includes(".")) out.push(`docker.io/${tagged.includes("/") ? "" : "library/"}${tagged}`);
  return [...new Set(out)];
}

async function readJson<T>(c: GrpcClient, digest: string): Promise<T> {
  const parts = await c.call("containerd.services.content.v1.Content/Read", svc.content.v1.ReadContentRequest.encode({ digest }).finish());
  const bytes = Buffer.concat(parts.map((p) => svc.content.v1.ReadContentResponse.decode(p).data));
  const got = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  if (got !== digest) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `containerd's blob ${digest} reads back as ${got}`);
  return JSON.parse(bytes.toString("utf8")) as T;
}

export async function containerdImageRoot(socket: string, namespace: string, ref: string, snapshotter = "overlayfs"): Promise<ContainerdImageRoot> {
  const c = await GrpcClient.connect(socket, namespace);
  try {
    let image: containerd.services.images.v1.IImage | undefined;
    for (const name of candidates(ref)) {
      try {
        image = svc.images.v1.GetImageResponse.decode(await c.unary("containerd.services.images.v1.Images/Get", svc.images.v1.GetImageRequest.encode({ name }).finish())).image ?? undefined;
        break;
      } catch (err) {
        if ((err as FractalError).code !== ErrorCode.NOT_FOUND) throw err;
      }
    }
    if (!image?.target?.digest) throw new FractalError(ErrorCode.IMAGE_NOT_FOUND, `no image ${ref} in containerd's namespace ${namespace} (see ctr -n ${namespace} images ls)`);
    let target: Descriptor = { mediaType: image.target.mediaType ?? "", digest: image.target.digest };
    if (INDEX_TYPES.has(target.mediaType)) {
      const index = await readJson<{ manifests: Descriptor[] }>(c, target.digest);
      const m = index.manifests.find((d) => d.platform?.os === "linux" && d.platform.architecture === "amd64") ?? index.manifests[0];
      if (!m) throw new FractalError(ErrorCode.IMAGE_NOT_FOUND, `image ${ref}: its index lists no manifest`);
      target = m;
    }
    const manifest = await readJson<{ config: Descriptor }>(c, target.digest);
    const config = await readJson<{ config?: RunConfig; rootfs?: { diff_ids?: string[] } }>(c, manifest.config.digest);
    const diffIds = config.rootfs?.diff_ids ?? [];
    if (diffIds.length === 0) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `image ${ref} has no layers`);
    const parent = chainId(diffIds);
    const lease = `fractal-run-${randomBytes(8).toString("hex")}`;
    await c.unary("containerd.services.leases.v1.Leases/Create", svc.leases.v1.CreateRequest.encode({ id: lease, labels: {} }).finish());
    const key = lease;
    let mounts: containerd.types.IMount[];
    try {
      mounts = svc.snapshots.v1.PrepareSnapshotResponse.decode(
        await c.unary("containerd.services.snapshots.v1.Snapshots/Prepare", svc.snapshots.v1.PrepareSnapshotRequest.encode({ snapshotter, key, parent, labels: {} }).finish(), { "containerd-lease": lease }),
      ).mounts;
    } catch (err) {
      await c.unary("containerd.services.leases.v1.Leases/Delete", svc.leases.v1.DeleteRequest.encode({ id: lease }).finish()).catch(() => {});
      if ((err as FractalError).code === ErrorCode.NOT_FOUND) {
        throw new FractalError(ErrorCode.IMAGE_NOT_FOUND, `image ${image.name} is not unpacked for containerd's ${snapshotter} snapshotter (ctr -n ${namespace} image unpack ${image.name})`);
      }
      throw err;
    }
    const root = preparedRoot(mounts);
    return {
      ...root,
      name: image.name ?? ref,
      config: config.config ?? {},
      release: async () => {
        const r = await GrpcClient.connect(socket, namespace);
        try {
          await r.unary("containerd.services.snapshots.v1.Snapshots/Remove", svc.snapshots.v1.RemoveSnapshotRequest.encode({ snapshotter, key }).finish()).catch(() => {});
          await r.unary("containerd.services.leases.v1.Leases/Delete", svc.leases.v1.DeleteRequest.encode({ id: lease }).finish()).catch(() => {});
        } finally {
          r.close();
        }
      },
    };
  } finally {
    c.close();
  }
}
