// containerd's view of a container (bundles CRI and ctr really wrote:
// test/fixtures/containerd/) turned into what the agent runs.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { loadOptions } from "../../host/containerd/shim/options.js";
import { groupKey } from "../../host/containerd/shim/group.js";
import { preparedRoot, runOptions, snapshotterRoot, type OciSpec } from "../../host/containerd/shim/translate.js";

const fixture = (name: string) => JSON.parse(fs.readFileSync(path.join(import.meta.dirname, "../fixtures/containerd", name), "utf8")) as OciSpec;
const SNAP = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs";
const overlay = {
  type: "overlay",
  source: "overlay",
  options: ["index=off", `workdir=${SNAP}/snapshots/9/work`, `upperdir=${SNAP}/snapshots/9/fs`, `lowerdir=${SNAP}/snapshots/3/fs:${SNAP}/snapshots/1/fs`],
};
let tmp = "";
afterEach(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  tmp = "";
});

describe("rootfs mounts", () => {
  it("takes containerd's overlay as it is, and shares the snapshotter's directory", () => {
    const r = preparedRoot([overlay]);
    expect(r.root).toEqual({ lowers: [`${SNAP}/snapshots/3/fs`, `${SNAP}/snapshots/1/fs`], upper: `${SNAP}/snapshots/9/fs`, work: `${SNAP}/snapshots/9/work` });
    expect(r.shareRoot).toBe(SNAP);
  });

  it("takes a bind of one snapshot (no parents) as a directory root, read-only when asked", () => {
    expect(preparedRoot([{ type: "bind", source: `${SNAP}/snapshots/4/fs`, options: ["ro", "rbind"] }]).root).toEqual({ directory: `${SNAP}/snapshots/4/fs`, readonly: true });
  });

  it("refuses what it cannot share: other mount types, several mounts, paths of two snapshotters", () => {
    expect(() => preparedRoot([{ type: "tmpfs", source: "tmpfs" }])).toThrow(/type "tmpfs" is not supported/);
    expect(() => preparedRoot([overlay, overlay])).toThrow(/got 2/);
    expect(() => snapshotterRoot(["/a/snapshots/1/fs", "/b/snapshots/2/fs"])).toThrow(/span several directories/);
  });
});

describe("OCI specs containerd wrote", () => {
  function withSources(spec: OciSpec): OciSpec {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "ctrd-spec-"));
    for (const m of spec.mounts ?? []) {
      if (m.type !== "bind") continue;
      const file = path.join(tmp, path.basename(m.destination));
      if (m.destination === "/dev/shm") fs.mkdirSync(file);
      else fs.writeFileSync(file, `content of ${m.destination}\n`);
      m.source = file;
    }
    return spec;
  }

  it("a CRI container: the process, CRI's files copied in, no /dev/shm, the sandbox's namespaces joined", () => {
    const spec = withSources(fixture("cri-container-config.json"));
    const sandbox = spec.annotations!["io.kubernetes.cri.sandbox-id"]!;
    const o = runOptions("c1", spec, preparedRoot([overlay]), false, () => {});
    expect(o.command).toEqual(["sleep", "1000000"]);
    expect(o.user).toBe("0:0");
    expect(o.image).toBe("docker.io/library/busybox:latest");
    expect(o.prepared!.files!.map((f) => [f.path, Buffer.from(f.content).toString()])).toEqual([
      ["/etc/hostname", "content of /etc/hostname\n"],
      ["/etc/hosts", "content of /etc/hosts\n"],
      ["/etc/resolv.conf", "content of /etc/resolv.conf\n"],
    ]);
    expect(o.prepared!.binds).toEqual([]);
    expect(o.prepared!.joinNamespaces).toBe(sandbox);
    expect(o.prepared!.joinTypes).toEqual(["pid", "ipc", "uts"]);
    expect(groupKey("k8s.io", "c1", spec, loadOptions(""))).toBe(`pod-${sandbox}`);
  });

  it("ctr's spec: limits from linux.resources, no pod, grouped by namespace", () => {
    const spec = fixture("ctr-config.json");
    const o = runOptions("cfg1", spec, preparedRoot([overlay]), true, () => {});
    expect(o.memoryBytes).toBe(64 << 20);
    expect(o.interactive).toBe(true);
    expect(o.prepared!.joinNamespaces).toBeUndefined();
    expect(groupKey("default", "cfg1", spec, { ...loadOptions(""), grouping: "namespace" })).toBe("ns-default");
    expect(groupKey("default", "cfg1", spec, { ...loadOptions(""), grouping: "container" })).toBe("ctr-default-cfg1");
  });

  it("refuses a host directory the VM cannot see, naming it", () => {
    const spec = fixture("ctr-config.json");
    spec.mounts!.push({ destination: "/data", type: "bind", source: os.tmpdir(), options: ["rbind", "rw"] });
    expect(() => runOptions("v1", spec, preparedRoot([overlay]), false, () => {})).toThrow(`host directory ${os.tmpdir()} (mounted at /data) is not shared with the VM; only ${SNAP} is`);
  });
});

describe("shim options", () => {
  it("names the file and the key of a bad setting", () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "ctrd-opt-"));
    const f = path.join(tmp, "shim.json");
    fs.writeFileSync(f, JSON.stringify({ grouping: "pod" }));
    expect(() => loadOptions(f)).toThrow(`fractal shim config ${f}: "grouping" must be "namespace" or "container"`);
    fs.writeFileSync(f, JSON.stringify({ memMB: 1 }));
    expect(() => loadOptions(f)).toThrow(`unknown key "memMB"`);
    fs.writeFileSync(f, JSON.stringify({ grouping: "container", memMiB: 512 }));
    expect(loadOptions(f)).toMatchObject({ grouping: "container", memMiB: 512 });
  });
});
