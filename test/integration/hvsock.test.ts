// Hybrid vsock as Firecracker and cloud-hypervisor expose it: a unix socket
// on the host where the client asks "CONNECT PORT\n" and gets "OK N\n".
// Here a small stand-in VMM forwards accepted connections to a real agent.
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startAgent, type RunningAgent } from "../helpers/agent.js";

let agent: RunningAgent;
let vmm: net.Server;
let sock: string;
const seen: string[] = [];

beforeAll(async () => {
  agent = await startAgent();
  sock = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "fractal-hvsock-")), "v.sock");
  vmm = net.createServer((c) => {
    let buf = "";
    const onData = (b: Buffer) => {
      buf += b.toString("latin1");
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      c.off("data", onData);
      const line = buf.slice(0, nl);
      seen.push(line);
      if (line !== "CONNECT 1024") return void c.end();
      const guest = net.connect(agent.unix.slice("unix://".length), () => {
        c.write("OK 1073741824\n");
        const rest = Buffer.from(buf.slice(nl + 1), "latin1");
        if (rest.length) guest.write(rest);
        c.pipe(guest).pipe(c);
      });
      guest.on("error", () => c.destroy());
    };
    c.on("data", onData);
    c.on("error", () => {});
  });
  await new Promise<void>((r) => vmm.listen(sock, () => r()));
});

afterAll(async () => {
  vmm?.close();
  await agent?.stop();
});

describe("hvsock:// client transport", () => {
  it("sends CONNECT PORT and then speaks the protocol", async () => {
    const r = await runCli(["--connect", `hvsock://${sock}:1024`, "exec", "--", "sh", "-c", "echo via-hvsock; exit 6"]);
    expect(r.stdout.toString()).toBe("via-hvsock\n");
    expect(r.code).toBe(6);
    expect(seen).toContain("CONNECT 1024");
  });

  it("reports a port the VMM refuses", async () => {
    const r = await runCli(["--connect", `hvsock://${sock}:9`, "ping"]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/cannot connect to hvsock:\/\/.*:9/);
  });
});
