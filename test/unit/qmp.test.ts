// The QMP client against fake QEMUs on a unix socket: one that answers, one
// whose main loop is stuck (greets, never answers), one that exits, one
// that announces a guest opening its serial ports.
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Qmp, qemuExited, vcpuSummary, watchPortOpen } from "../../host/vm/qmp.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-qmp-"));
const servers: net.Server[] = [];

function fakeQemu(answer: boolean, negotiated?: (c: net.Socket) => void): Promise<string> {
  const sock = path.join(dir, `qmp-${servers.length}.sock`);
  const server = net.createServer((c) => {
    c.on("error", () => {});
    c.write(`${JSON.stringify({ QMP: { version: {}, capabilities: [] } })}\n`);
    c.on("data", (b) => {
      if (!answer) return;
      for (const line of b.toString().split("\n").filter(Boolean)) {
        const { execute } = JSON.parse(line) as { execute: string };
        c.write(`${JSON.stringify({ event: "NOISE" })}\n`);
        c.write(`${JSON.stringify(execute === "bad" ? { error: { class: "GenericError", desc: "no such command" } } : { return: {} })}\n`);
        if (execute === "qmp_capabilities") negotiated?.(c);
      }
    });
  });
  servers.push(server);
  return new Promise((resolve) => server.listen(sock, () => resolve(sock)));
}

afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

describe("QMP client", () => {
  it("negotiates and runs commands, skipping events, and names a command's error", async () => {
    const q = await Qmp.connect(await fakeQemu(true), 2000);
    await expect(q.execute("query-status")).resolves.toEqual({});
    await expect(q.execute("bad")).rejects.toThrow(/QMP bad: no such command/);
    q.close();
  });

  it("gives up on a QEMU that greets but never answers, instead of hanging", async () => {
    const t0 = Date.now();
    await expect(Qmp.connect(await fakeQemu(false), 300)).rejects.toThrow(/qmp_capabilities: no answer within 300 ms/);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it("tells a QEMU that exited from one still running", async () => {
    const sock = await fakeQemu(true);
    expect(await qemuExited(sock, 200)).toBe(false);
    expect(await qemuExited(path.join(dir, "nothing.sock"), 200)).toBe(true);
  });
});

describe("the guest opening the agent's serial port", () => {
  const event = (data: object) => `${JSON.stringify({ event: "VSERPORT_CHANGE", data, timestamp: { seconds: 1, microseconds: 0 } })}\n`;
  /** A fake QEMU and, once a client negotiated (and had time to listen), its side of the connection. */
  async function negotiatedQemu(): Promise<{ sock: string; client: Promise<net.Socket> }> {
    let negotiated!: (c: net.Socket) => void;
    const client = new Promise<net.Socket>((resolve) => (negotiated = resolve));
    const sock = await fakeQemu(true, negotiated);
    // The watcher listens once its connect resolves, just after the reply.
    return { sock, client: client.then(async (c) => (await new Promise((r) => setTimeout(r, 100)), c)) };
  }
  const settled = (p: Promise<boolean>, ms: number) => Promise.race([p, new Promise<string>((r) => setTimeout(() => r("pending"), ms))]);

  it("is told by QEMU's VSERPORT_CHANGE for that port opening, not by other ports or a close", async () => {
    const { sock, client } = await negotiatedQemu();
    const watch = watchPortOpen(sock, "agentport");
    const qemu = await client;
    qemu.write(event({ id: "other", open: true }) + event({ id: "agentport", open: false }));
    expect(await settled(watch.opened, 300)).toBe("pending");
    qemu.write(event({ id: "agentport", open: true }));
    expect(await settled(watch.opened, 2000)).toBe(true);
    watch.close();
  });

  it("says it cannot tell, without failing, when QMP cannot be had or QEMU goes away", async () => {
    const none = watchPortOpen(path.join(dir, "nothing.sock"), "agentport");
    expect(await settled(none.opened, 2000)).toBe(false);
    const { sock, client } = await negotiatedQemu();
    const gone = watchPortOpen(sock, "agentport");
    const qemu = await client;
    expect(await settled(gone.opened, 200)).toBe("pending");
    qemu.destroy();
    expect(await settled(gone.opened, 2000)).toBe(false);
  });
});

describe("a stuck guest's vCPUs", () => {
  it("names each vCPU's mode, halt and instruction pointer from QEMU's `info registers -a`", () => {
    // Trimmed from a TCG guest's real output: CPU 0 in the agent, CPU 1 idle.
    const regs = [
      "",
      "CPU#0",
      "RAX=0000046b3e9e8e48 RBX=0000046b3ea35088 RCX=0000000000000001 RDX=0000000000000000",
      "RIP=00000000021199ba RFL=00000206 [-----P-] CPL=3 II=0 A20=1 SMM=0 HLT=0",
      "CR0=80050033 CR2=0000046b3ecfa000 CR3=0000000005624000 CR4=00750ef0",
      "CPU#1",
      "RAX=0000000000000000 RBX=0000000000000001 RCX=0000000000000001 RDX=0000000000000000",
      "RIP=ffffffff81a592eb RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1",
      "",
    ].join("\r\n");
    expect(vcpuSummary(regs)).toBe("vCPU 0 in user space at 21199ba, vCPU 1 halted in the kernel at ffffffff81a592eb");
    // Arm's dump names the PC and no privilege level of x86's kind.
    expect(vcpuSummary("CPU#0\n PC=ffff800008b1c6e4 X00=0000000000000000\n")).toBe("vCPU 0 at ffff800008b1c6e4");
    // Early in boot, before the kernel brings up the second CPU.
    expect(vcpuSummary("CPU#0\nRIP=ffffffff819ecbb1 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\nCPU#1\n")).toBe("vCPU 0 in the kernel at ffffffff819ecbb1, vCPU 1 not started");
    expect(vcpuSummary("Error: no such command")).toBe("no vCPU state");
  });
});
