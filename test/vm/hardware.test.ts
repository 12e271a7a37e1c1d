// The hardware path, with QEMU standing in for a machine: network boot
// through iPXE (no -kernel, no -initrd, no virtio device at all), a wired
// NIC driver from the initramfs, a plain 16550 UART, and a static address.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/agent.js";
import { freePort } from "../../host/vm/manager.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-hw-test-"));
const env = { FRACTAL_STATE: path.join(dir, "state") };
const children: ChildProcess[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

afterAll(async () => {
  for (const c of children) c.kill("SIGKILL");
  await runCli(["vm", "stop", "hwstatic"], { env });
  fs.rmSync(dir, { recursive: true, force: true });
}, 120_000);

/** Runs a command in the agent at `url` until it answers (the machine is still booting), up to `ms`. */
async function execWhenUp(url: string, argv: string[], ms: number): Promise<string> {
  const end = Date.now() + ms;
  let last = "";
  while (Date.now() < end) {
    const r = await runCli(["--connect", url, "exec", "--", ...argv]);
    if (r.code === 0) return r.stdout.toString();
    last = r.stderr;
    await sleep(2000);
  }
  throw new Error(`no answer from ${url} in ${ms} ms: ${last}`);
}

describe("network boot (iPXE, HTTP from netboot-serve)", () => {
  it("boots a machine with no kernel or initrd given, then serves it over TCP (DHCP) and a 16550 UART, with no virtio device", async () => {
    // netboot-serve, as an operator would start it: HTTP on the host, the
    // TFTP boot file beside it, the agent on TCP and the second UART.
    const serve = spawn(path.join(import.meta.dirname, "../../build/fractal-host"), [
      "netboot-serve", "--listen", "127.0.0.1:0", "--tftp-dir", path.join(dir, "tftp"),
      "--agent-listen", "tcp://0.0.0.0:1024", "--agent-listen", "serial:///dev/ttyS1?baud=115200",
    ], { stdio: ["ignore", "pipe", "pipe"] });
    children.push(serve);
    let served = "";
    let requests = "";
    serve.stdout!.on("data", (b: Buffer) => (served += b.toString()));
    serve.stderr!.on("data", (b: Buffer) => (requests += b.toString()));
    for (let i = 0; i < 100 && !/serving http/.test(served); i++) await sleep(100);
    expect(served).toMatch(/serving http:\/\/127\.0\.0\.1:\d+\/boot\.ipxe/);
    expect(fs.readFileSync(path.join(dir, "tftp/boot.ipxe"), "utf8")).toMatch(/^#!ipxe\nchain http:\/\/\$\{next-server\}:\d+\/boot\.ipxe/);

    // The machine: SeaBIOS, an e1000 with QEMU's own iPXE ROM, user-mode
    // networking whose DHCP names the TFTP boot file, two UARTs.
    const port = await freePort();
    const uart = path.join(dir, "uart.sock");
    const qemu = spawn("qemu-system-x86_64", [
      "-machine", "q35,accel=tcg", "-cpu", "max", "-m", "1024", "-smp", "2",
      "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
      "-netdev", `user,id=n0,tftp=${path.join(dir, "tftp")},bootfile=boot.ipxe,hostfwd=tcp:127.0.0.1:${port}-:1024`,
      "-device", "e1000,netdev=n0,bootindex=1",
      "-chardev", `file,id=con,path=${path.join(dir, "console.log")}`, "-serial", "chardev:con",
      "-chardev", `socket,id=uart,path=${uart},server=on,wait=off`, "-serial", "chardev:uart",
    ], { stdio: "ignore" });
    children.push(qemu);

    const out = await execWhenUp(`tcp://127.0.0.1:${port}`, ["sh", "-c", "ls /sys/bus/virtio/devices | wc -l; readlink /sys/class/net/eth0/device/driver; cat /proc/cmdline"], 240_000);
    const [virtio, driver, cmdline] = out.trim().split("\n");
    expect(virtio!.trim()).toBe("0");
    expect(driver).toMatch(/\/e1000$/);
    expect(cmdline).toMatch(/fractal\.listen=tcp:\/\/0\.0\.0\.0:1024,serial:\/\/\/dev\/ttyS1\?baud=115200/);
    // The kernel and initramfs came over HTTP from netboot-serve, not from QEMU.
    expect(requests).toMatch(/GET \/vmlinuz 200/);
    expect(requests).toMatch(/GET \/initramfs\.cpio 200/);

    // The same agent over the plain UART: no key needed on a local line.
    const r = await runCli(["--connect", `serial://${uart}`, "exec", "--", "cat", "/run/fractal/agent.log"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.toString()).toMatch(/listening on serial:\/\/\/dev\/ttyS1\?baud=115200/);
    expect(r.stdout.toString()).toMatch(/loaded \d+ of \d+ NIC drivers/);
    expect(r.stdout.toString()).toMatch(/DHCP configured eth0/);
  }, 360_000);
});

describe("a static address (fractal.ip)", () => {
  it("puts the address and default route on the link instead of DHCP, over an e1000e", async () => {
    const b = await runCli(["boot", "--name", "hwstatic", "--mem", "768M", "--nic", "e1000e", "--append", "fractal.ip=10.0.2.15/24,10.0.2.2", "--detach"], { env });
    expect(b.code, b.stderr).toBe(0);
    // boot waited for the agent over TCP: the static address answers.
    const r = await runCli(["exec", "--vm", "hwstatic", "--", "sh", "-c", "readlink /sys/class/net/eth0/device/driver; ip addr show dev eth0; cat /proc/net/route; cat /run/fractal/agent.log"], { env });
    expect(r.code, r.stderr).toBe(0);
    const text = r.stdout.toString();
    expect(text).toMatch(/\/e1000e\n/);
    expect(text).toMatch(/10\.0\.2\.15\/24/);
    // The default route (destination 0) through 10.0.2.2, as the kernel holds it (little-endian hex).
    expect(text).toMatch(/eth0\t00000000\t0202000A\t/);
    expect(text).toMatch(/eth0 has 10\.0\.2\.15\/24 via 10\.0\.2\.2 \(fractal\.ip\)/);
    expect(text).not.toMatch(/DHCP configured/);
  }, 300_000);

  it("refuses a NIC model it does not know, naming the ones it does", async () => {
    const r = await runCli(["boot", "--name", "hwbad", "--nic", "rtl8139"], { env });
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/bad --nic "rtl8139": expected virtio, e1000, e1000e/);
  });
});
