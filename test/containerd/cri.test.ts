// Kubernetes' view: containerd's CRI plugin with a runtime handler
// "fractal", driven by crictl (built from sigs.k8s.io/cri-tools). A pod is
// one VM: its sandbox (the pause image) boots it, its containers run in it,
// and removing the pod powers it off. Host networking: there is no CNI
// network here, and in a VM "host" is the guest's own network.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Containerd, CRICTL, imageTarballs, PAUSE_IMAGE, ROOT, tmpdir, until } from "./daemon.js";

let cd: Containerd;
let work: string;

const json = (file: string, v: unknown) => (fs.writeFileSync(file, JSON.stringify(v)), file);

beforeAll(async () => {
  expect(fs.existsSync(CRICTL), `${CRICTL} is missing: make test-deps builds it`).toBe(true);
  work = tmpdir();
  cd = new Containerd();
  await cd.start();
  const { busybox, pause } = imageTarballs(work);
  for (const args of [
    ["image", "import", "--base-name", "docker.io/library/pause", pause],
    ["image", "import", busybox],
    ["image", "tag", "busybox:latest", "docker.io/library/busybox:latest"],
  ]) {
    const r = cd.ctr("-n", "k8s.io", ...args);
    expect(r.code, r.stderr).toBe(0);
  }
  expect(cd.ctr("-n", "k8s.io", "image", "ls", "-q").stdout).toContain(PAUSE_IMAGE);
}, 300_000);

afterAll(async () => {
  await cd?.destroy();
  if (work) fs.rmSync(work, { recursive: true, force: true });
}, 120_000);

describe("crictl with the fractal runtime handler", () => {
  const pod = () =>
    json(path.join(work, "pod.json"), {
      metadata: { name: "p1", namespace: "default", uid: "uid-p1", attempt: 0 },
      log_directory: path.join(work, "logs"),
      linux: { security_context: { namespace_options: { network: 2 } } }, // NODE: no CNI
    });
  const container = (name: string) =>
    json(path.join(work, `${name}.json`), {
      metadata: { name },
      image: { image: "docker.io/library/busybox:latest" },
      command: ["sh", "-c", `echo ${name} says hi; cat /proc/sys/kernel/random/boot_id; trap 'echo ${name} stopping; exit 0' TERM; while :; do sleep 1; done`],
      log_path: `${name}.log`,
      linux: {},
    });
  let podId = "";
  const ids: string[] = [];

  it("runs a pod: its sandbox boots one VM", () => {
    fs.mkdirSync(path.join(work, "logs"));
    const r = cd.crictl("runp", "--runtime", "fractal", pod());
    expect(r.code, r.stderr).toBe(0);
    podId = r.stdout.trim();
    expect(podId).toMatch(/^[0-9a-f]{64}$/);
    expect(cd.crictl("pods", "-q").stdout).toContain(podId);
    expect(cd.qemuPids()).toHaveLength(1);
  }, 600_000); // boots a VM under TCG, maybe beside other tests' VMs

  it("creates and starts two containers in the pod, both in its VM", async () => {
    for (const name of ["c1", "c2"]) {
      const r = cd.crictl("create", podId, container(name), pod());
      expect(r.code, r.stderr).toBe(0);
      ids.push(r.stdout.trim());
    }
    const s = cd.crictl("start", ...ids);
    expect(s.code, s.stderr).toBe(0);
    const logs = await Promise.all(ids.map((id, i) => until(`c${i + 1}'s log`, () => {
      const out = cd.crictl("logs", id).stdout;
      return /[0-9a-f-]{36}/.test(out) && out;
    })));
    expect(logs[0]).toContain("c1 says hi");
    expect(logs[1]).toContain("c2 says hi");
    const boot = logs.map((l) => l.match(/[0-9a-f-]{36}/)![0]);
    expect(boot[1]).toBe(boot[0]);
    expect(cd.qemuPids()).toHaveLength(1);
    const ps = cd.crictl("ps").stdout;
    expect(ps.match(/Running/g)).toHaveLength(2);
    // Stats come from the container's cgroup in the guest.
    const stats = JSON.parse(cd.crictl("stats", "-o", "json", ids[0]!).stdout) as { stats: { memory: { usageBytes: { value: string } }; cpu: { usageCoreNanoSeconds: { value: string } } }[] };
    expect(Number(stats.stats[0]!.memory.usageBytes.value)).toBeGreaterThan(0);
    expect(Number(stats.stats[0]!.cpu.usageCoreNanoSeconds.value)).toBeGreaterThan(0);
  });

  it("execs in a container, with and without a terminal", () => {
    const e = cd.crictl("exec", ids[0]!, "sh", "-c", "echo exec in $(hostname); exit 0");
    expect(e.code, e.stderr).toBe(0);
    expect(e.stdout).toMatch(/^exec in \S+\n$/);
    const r = spawnSync(path.join(ROOT, "node_modules/.bin/bun"), [path.join(ROOT, "test/helpers/pty-shell.ts"), CRICTL, "--runtime-endpoint", `unix://${cd.address}`, "--timeout", "300s", "exec", "-it", ids[1]!, "sh"], {
      encoding: "utf8",
      timeout: 300_000,
      env: { ...process.env, CRI_CONFIG_FILE: "/dev/null" },
    });
    const t = JSON.parse(r.stdout) as { output: string; error?: string; exitCode?: number };
    expect(t.error, t.output).toBeUndefined();
    expect(t.output).toMatch(/\b42\b/);
    expect(t.output).toContain("30 100");
    expect(t.output).toContain("40 120");
  });

  it("stops and removes the containers, then the pod, which powers its VM off", async () => {
    const stop = cd.crictl("stop", "--timeout", "10", ...ids);
    expect(stop.code, stop.stderr).toBe(0);
    expect(cd.crictl("logs", ids[0]!).stdout).toContain("c1 stopping");
    expect(cd.crictl("ps", "-a").stdout.match(/Exited/g)).toHaveLength(2);
    expect(cd.crictl("rm", ...ids).code).toBe(0);
    expect(cd.crictl("stopp", podId).code).toBe(0);
    expect(cd.crictl("rmp", podId).code).toBe(0);
    await until("the pod's VM to be gone", () => cd.qemuPids().length === 0 && cd.shimPids().length === 0, 60_000);
    expect(cd.crictl("pods", "-q").stdout.trim()).toBe("");
  });
});
