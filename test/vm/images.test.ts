// Images shaped like the ones people run, made by tools that are not ours
// (test/fixtures/make-real.sh: debootstrap from Debian's archive, umoci):
// a config with WorkingDir, an absolute Entrypoint, USER and Env; a #!
// script entrypoint with numeric ids absent from /etc/passwd; 65 layers; a
// Debian root file system with merged /usr; two images sharing a layer.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hex } from "../../oci/digest.js";
import { ImageStore } from "../../oci/store.js";
import { ROOT, runCli } from "../helpers/agent.js";

const state = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-img-test-"));
const store = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-img-store-"));
const env = { FRACTAL_STATE: state };
const NAME = "imgtest";
const cli = (args: string[]) => runCli(args, { env });
const vm = (cmd: string, ...args: string[]) => cli([cmd, "--vm", NAME, ...args]);
const out = (r: { stdout: Buffer }) => r.stdout.toString();

/** The default busybox image's one layer blob, the base of the small test images. */
function busyboxLayer(): string {
  const images = path.join(ROOT, "build/images");
  const blob = (d: string) => path.join(images, "blobs/sha256", d.split(":")[1]!);
  const index = JSON.parse(fs.readFileSync(path.join(images, "index.json"), "utf8"));
  return blob(JSON.parse(fs.readFileSync(blob(index.manifests[0].digest), "utf8")).layers[0].digest);
}

beforeAll(async () => {
  // The debootstrap tree is kept in build/ between runs on one machine.
  execFileSync(path.join(ROOT, "test/fixtures/make-real.sh"), [busyboxLayer(), store, path.join(ROOT, "build/test-cache")], { stdio: ["ignore", "ignore", "inherit"] });
  const r = await cli(["boot", "--name", NAME, "--images", store, "--detach"]);
  if (r.code !== 0) throw new Error(`boot failed (${r.code}):\n${r.stderr}`);
}, 600_000);

afterAll(async () => {
  await cli(["vm", "stop", NAME]);
  fs.rmSync(state, { recursive: true, force: true });
  fs.rmSync(store, { recursive: true, force: true });
}, 120_000);

describe("image configs", () => {
  it("runs an absolute Entrypoint from the root, in the image's WorkingDir, as its USER, with its Env", async () => {
    const r = await vm("run", "--rm", "real:entry");
    expect(r.stderr).toBe("");
    expect(out(r)).toBe("hello from app in /srv\n");
    expect(r.code).toBe(0);
    // Arguments replace Cmd and keep the Entrypoint.
    const a = await vm("run", "--rm", "real:entry", 'echo "again $GREETING as $(id -u) in $PWD"');
    expect(out(a)).toBe("again hello as 1000 in /srv\n");
    // A relative command is looked up from the working directory.
    const rel = await vm("run", "--rm", "-w", "/bin", "--entrypoint", "./busybox", "real:entry", "echo", "relative");
    expect(out(rel)).toBe("relative\n");
  }, 120_000);

  it("runs a #! script entrypoint as USER uid:gid that /etc/passwd does not know", async () => {
    const r = await vm("run", "--rm", "real:script", "a", "b");
    expect(r.stderr).toBe("");
    expect(out(r)).toBe("script: a b as 1234:5678 in /tmp\n");
    expect(out(await vm("run", "--rm", "real:script"))).toBe("script: default as 1234:5678 in /tmp\n");
  }, 120_000);

  it("runs an image of 65 layers, more than one mount's options can name by path", async () => {
    const r = await vm("run", "--rm", "many:layers");
    expect(r.stderr).toBe("");
    expect(out(r)).toBe("64\n");
    expect(out(await vm("run", "--rm", "many:layers", "cat", "/layers/1", "/layers/64"))).toBe("1\n64\n");
  }, 300_000);
});

describe("a Debian image from debootstrap", () => {
  it("runs its tools, with merged /usr", async () => {
    const release = await vm("run", "--rm", "debian:bookworm", "cat", "/etc/os-release");
    expect(release.stderr).toBe("");
    expect(out(release)).toMatch(/^ID=debian$/m);
    expect(out(release)).toMatch(/^VERSION_CODENAME=bookworm$/m);
    const apt = await vm("run", "--rm", "debian:bookworm", "bash", "-c", "apt-get --version; readlink /bin /lib /sbin");
    expect(out(apt)).toMatch(/^apt 2\.\d+\.\d+ \(amd64\)\n/);
    expect(out(apt)).toMatch(/\nusr\/bin\nusr\/lib\nusr\/sbin\n$/);
  }, 300_000);

  it("runs as nobody, named in the image's own /etc/passwd", async () => {
    const r = await vm("run", "--rm", "-u", "nobody", "debian:bookworm", "id");
    expect(out(r)).toBe("uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n");
  }, 120_000);

  it("takes an interactive bash through exec -it", async () => {
    expect((await vm("run", "-d", "--name", "deb", "debian:bookworm", "sleep", "600")).code).toBe(0);
    const bun = path.join(ROOT, "node_modules/.bin/bun");
    const r = JSON.parse(execFileSync(bun, [path.join(ROOT, "test/helpers/pty-cli.ts"), "bash", `vm:${NAME}`, "exec", "-it", "deb"], { env: { ...process.env, ...env } }).toString());
    expect(r.output).toMatch(/bash 5\.\d+\S* on \/dev\/pts\/\d+/);
    expect(r.exitCode).toBe(5);
    expect(r.restored).toBe(true);
    await vm("rm", "-f", "deb");
  }, 120_000);

  it("unpacks a layer two images share once", async () => {
    const r = await vm("run", "--rm", "debian:app", "cat", "/etc/app-layer");
    expect(out(r)).toBe("from the app layer\n");
    const s = new ImageStore(store);
    const want = new Set([...s.resolve("debian:bookworm").layers, ...s.resolve("debian:app").layers].map((l) => hex(l.diffId)));
    expect(want.size).toBe(2);
    const cache = out(await cli(["exec", "--vm", NAME, "--", "ls", "/run/fractal/layers"])).split("\n").filter((l) => want.has(l));
    expect(cache.sort()).toEqual([...want].sort());
  }, 120_000);
});
