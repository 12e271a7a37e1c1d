// The VM's user-mode network, through the real CLI in TCG guests: passt by
// default (its own process, 64 KiB frames), QEMU's slirp with --net user.
// Either way the host is 10.0.2.2 from the guest, --forward carries host
// ports in, and the agent's stream arrives intact.
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/agent.js";
import { freePort } from "../../host/vm/manager.js";

const state = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-net-test-"));
const env = { FRACTAL_STATE: state };
const cli = (args: string[]) => runCli(args, { env });
const out = (r: { stdout: Buffer }) => r.stdout.toString();
let server: http.Server;
let httpPort = 0;

beforeAll(async () => {
  server = http.createServer((_req, res) => res.end("from the host\n"));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  httpPort = (server.address() as net.AddressInfo).port;
});

afterAll(async () => {
  for (const name of ["netpasst", "netuser"]) await cli(["vm", "stop", name]);
  server.close();
  fs.rmSync(state, { recursive: true, force: true });
}, 120_000);

/** Boots `name`, checks the network from both sides, and returns the guest's MTU. */
async function checkNet(name: string, extra: string[]): Promise<number> {
  const fwd = await freePort();
  const b = await cli(["boot", "--name", name, "--forward", `${fwd}:1024`, ...extra, "--detach"]);
  expect(b.code, b.stderr).toBe(0);
  const vm = (...argv: string[]) => cli(["exec", "--vm", name, "--", ...argv]);
  // The host, from the guest, at the gateway's address.
  const get = await vm("sh", "-c", `wget -O /tmp/got http://10.0.2.2:${httpPort}/ && cat /tmp/got`);
  expect(get.code, get.stderr).toBe(0);
  expect(out(get)).toBe("from the host\n");
  // A host port carried to a guest listener (the agent's own, a second way in).
  const through = await cli(["--connect", `tcp://127.0.0.1:${fwd}`, "exec", "--", "echo", "through the forward"]);
  expect(through.code, through.stderr).toBe(0);
  expect(out(through)).toBe("through the forward\n");
  // 32 MiB of random bytes over the agent's TCP link, every one intact.
  const data = await vm("sh", "-c", "head -c 33554432 /dev/urandom > /tmp/r; md5sum /tmp/r >&2; cat /tmp/r");
  expect(data.code).toBe(0);
  expect(data.stdout.length).toBe(32 << 20);
  expect(data.stderr).toContain(crypto.createHash("md5").update(data.stdout).digest("hex"));
  return Number(out(await vm("cat", "/sys/class/net/eth0/mtu")).trim());
}

/** True once the process is gone (a zombie waiting for init counts). */
function gone(pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return true;
  }
}

describe("the VM's network", () => {
  it("uses passt by default: 64 KiB frames, the host reachable, ports forwarded, and passt gone with the VM", async () => {
    expect(await checkNet("netpasst", [])).toBe(65520);
    const rec = JSON.parse(fs.readFileSync(path.join(state, "netpasst/vm.json"), "utf8")) as { net: string };
    expect(rec.net).toBe("passt");
    const pid = Number(fs.readFileSync(path.join(state, "netpasst/passt.pid"), "utf8"));
    expect(gone(pid)).toBe(false);
    expect((await cli(["vm", "stop", "netpasst"])).code).toBe(0);
    for (let i = 0; i < 50 && !gone(pid); i++) await new Promise((r) => setTimeout(r, 100));
    expect(gone(pid)).toBe(true);
  }, 300_000);

  it("keeps QEMU's slirp with --net user", async () => {
    expect(await checkNet("netuser", ["--net", "user"])).toBe(1500);
    expect(fs.existsSync(path.join(state, "netuser/passt.pid"))).toBe(false);
  }, 300_000);

  it("names passt's failure and leaves no VM behind", async () => {
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", () => r()));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const r = await cli(["boot", "--name", "netfail", "--tcp", String(port), "--detach"]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(new RegExp(`passt did not start \\(exit 1\\):[^]*Failed to bind any port for '-t 127\\.0\\.0\\.1/${port}:1024'`));
      expect(out(await cli(["ls"]))).not.toMatch(/netfail/);
    } finally {
      taken.close();
    }
    const bad = await cli(["boot", "--name", "netbad", "--net", "tap"]);
    expect(bad.code).toBe(125);
    expect(bad.stderr).toMatch(/bad --net "tap": expected passt or user/);
  });
});
