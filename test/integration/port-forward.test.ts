// port-forward: host connections carried over the agent link as streams to
// a port on the agent's side (here an agent on loopback; test/vm/ports
// reaches a container's httpd through a VM). Many connections at once, a
// large transfer intact, half-close, and a refused port explained.
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import http from "node:http";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HOST_BIN, runCli, startAgent, type RunningAgent } from "../helpers/agent.js";

const BIG = 256 << 20;
let agent: RunningAgent;
let server: http.Server;
let echo: net.Server;
let serverPort = 0;
let echoPort = 0;

/** 256 MiB of a repeating, position-dependent pattern, and its hash. */
function bigChunk(i: number): Buffer {
  const b = Buffer.alloc(1 << 20);
  for (let j = 0; j < b.length; j += 4) b.writeUInt32LE((i * 2654435761 + j) >>> 0, j);
  return b;
}
const bigHash = (() => {
  const h = createHash("sha256");
  for (let i = 0; i < BIG >> 20; i++) h.update(bigChunk(i));
  return h.digest("hex");
})();

beforeAll(async () => {
  agent = await startAgent();
  server = http.createServer((req, res) => {
    if (req.url === "/big") {
      res.writeHead(200, { "content-length": BIG });
      let i = 0;
      const more = () => {
        while (i < BIG >> 20) if (!res.write(bigChunk(i++))) return void res.once("drain", more);
        res.end();
      };
      more();
    } else res.end(`hello ${req.url}\n`);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  serverPort = (server.address() as net.AddressInfo).port;
  // Answers only after the client half-closed: "got N bytes".
  echo = net.createServer((s) => {
    let n = 0;
    s.on("data", (b: Buffer) => (n += b.length));
    s.on("end", () => s.end(`got ${n} bytes\n`));
  });
  await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
  echoPort = (echo.address() as net.AddressInfo).port;
});
afterAll(async () => {
  server?.close();
  echo?.close();
  await agent?.stop();
});

/** Starts `port-forward 0:PORT` over `url`; resolves with the local port it reports. */
async function forward(url: string, port: number): Promise<{ local: number; proc: ChildProcess; stderr: () => string }> {
  const proc = spawn(HOST_BIN, ["--connect", url, "port-forward", `0:${port}`], { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  proc.stderr!.on("data", (b: Buffer) => (err += b.toString()));
  const local = await new Promise<number>((resolve, reject) => {
    let out = "";
    proc.stdout!.on("data", (b: Buffer) => {
      out += b.toString();
      const m = out.match(/Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)/);
      if (m) resolve(Number(m[1]));
    });
    proc.on("exit", (code) => reject(new Error(`port-forward exited ${code}: ${err}`)));
  });
  return { local, proc, stderr: () => err };
}

function get(port: number, p: string): Promise<{ status: number; hash: string; text: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    http.get({ host: "127.0.0.1", port, path: p, agent: false }, (res) => {
      const h = createHash("sha256");
      let bytes = 0;
      let text = "";
      res.on("data", (b: Buffer) => {
        h.update(b);
        bytes += b.length;
        if (text.length < 100) text += b.toString();
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, hash: h.digest("hex"), text, bytes }));
      res.on("error", reject);
    }).on("error", reject);
  });
}

describe("port-forward", () => {
  for (const transport of ["tcp", "ws"] as const) {
    it(`carries 20 concurrent HTTP requests and 256 MiB intact, over ${transport}`, async () => {
      const f = await forward(agent[transport], serverPort);
      try {
        const many = await Promise.all(Array.from({ length: 20 }, (_, i) => get(f.local, `/r${i}`)));
        expect(many.map((r) => r.text)).toEqual(Array.from({ length: 20 }, (_, i) => `hello /r${i}\n`));
        const big = await get(f.local, "/big");
        expect(big.bytes).toBe(BIG);
        expect(big.hash).toBe(bigHash);
      } finally {
        f.proc.kill("SIGINT");
      }
    });
  }

  it("passes a half-close through: the far side answers after our end of input", async () => {
    const f = await forward(agent.tcp, echoPort);
    try {
      const answer = await new Promise<string>((resolve, reject) => {
        const s = net.connect(f.local, "127.0.0.1", () => s.end(Buffer.alloc(100_000, 7)));
        let got = "";
        s.on("data", (b: Buffer) => (got += b.toString()));
        s.on("end", () => resolve(got));
        s.on("error", reject);
      });
      expect(answer).toBe("got 100000 bytes\n");
    } finally {
      f.proc.kill("SIGINT");
    }
  });

  it("closes a connection to a port nothing listens on, saying so", async () => {
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
    const dead = (closed.address() as net.AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const f = await forward(agent.tcp, dead);
    try {
      await new Promise<void>((resolve) => {
        const s = net.connect(f.local, "127.0.0.1");
        s.on("error", () => {});
        s.on("close", () => resolve());
      });
      await new Promise((r) => setTimeout(r, 200));
      expect(f.stderr()).toContain(`cannot connect to 127.0.0.1:${dead} in the guest: nothing listens there`);
    } finally {
      f.proc.kill("SIGINT");
    }
  });

  it("refuses bad ports and a container that does not exist", async () => {
    expect((await runCli(["--connect", agent.tcp, "port-forward", "70000"])).stderr).toContain('bad guest port "70000"');
    const r = await runCli(["--connect", agent.tcp, "port-forward", "nosuch", "0:80"]);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain("no such container: nosuch");
  });
});
