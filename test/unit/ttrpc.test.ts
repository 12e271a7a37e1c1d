// ttrpc framing and containerd's messages, checked against bytes captured
// from containerd 1.6 and runc's shim (test/fixtures/ttrpc/README.md).
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { eventAny } from "../../host/containerd/events.js";
import { containerd, google, ttrpc } from "../../host/containerd/gen/containerd.js";
import { Code, encodeFrame, FrameReader, MAX_DATA, TtrpcClient, TtrpcError, TtrpcServer, typed, TYPE_REQUEST, TYPE_RESPONSE } from "../../host/containerd/ttrpc.js";

const fixture = (name: string) => new Uint8Array(fs.readFileSync(path.join(import.meta.dirname, "../fixtures/ttrpc", name)));
const T = containerd.task.v2;

describe("ttrpc frames", () => {
  it("reads containerd's Kill request: header, envelope and the KillRequest inside", () => {
    const frames = new FrameReader().push(fixture("containerd-kill-request.bin"));
    expect(frames).toHaveLength(1);
    const f = frames[0]!;
    expect(f.type).toBe(TYPE_REQUEST);
    expect(f.flags).toBe(0);
    expect(f.streamId % 2).toBe(1); // client streams are odd
    const req = ttrpc.Request.decode(f.data);
    expect(req.service).toBe("containerd.task.v2.Task");
    expect(req.method).toBe("Kill");
    const kill = T.KillRequest.decode(req.payload);
    expect(kill.id).toBe("k3");
    expect(kill.signal).toBe(9);
  });

  it("reads a request's deadline (containerd's State carries timeout_nano)", () => {
    const [f] = new FrameReader().push(fixture("containerd-state-request.bin"));
    const req = ttrpc.Request.decode(f!.data);
    expect(req.method).toBe("State");
    expect(Number(req.timeoutNano)).toBeGreaterThan(1e9);
  });

  it("reassembles frames from one byte at a time and from several frames in one chunk", () => {
    const all = Buffer.concat([fixture("containerd-state-request.bin"), fixture("containerd-pids-request.bin"), fixture("containerd-kill-request.bin")]);
    const r = new FrameReader();
    const one = [...all].flatMap((b) => r.push(Uint8Array.of(b)));
    expect(one.map((f) => ttrpc.Request.decode(f.data).method)).toEqual(["State", "Pids", "Kill"]);
    const whole = new FrameReader().push(all);
    expect(whole.map((f) => Buffer.from(f.data).toString("hex"))).toEqual(one.map((f) => Buffer.from(f.data).toString("hex")));
  });

  it("refuses a length over 4 MiB from the header alone", () => {
    const head = Buffer.alloc(10);
    head.writeUInt32BE(MAX_DATA + 1, 0);
    expect(() => new FrameReader().push(head)).toThrow(/over the 4194304-byte limit/);
    expect(() => encodeFrame(1, TYPE_RESPONSE, 0, new Uint8Array(MAX_DATA + 1))).toThrow(TtrpcError);
  });

  it("decodes runc's Wait answer, and encodes an empty answer byte for byte as runc's shim does", () => {
    const [f] = new FrameReader().push(fixture("runc-shim-wait-response.bin"));
    const res = ttrpc.Response.decode(f!.data);
    expect(res.payload).toBeDefined();
    expect(res.status).toBeNull();
    expect(T.WaitResponse.decode(res.payload).exitStatus).toBe(3);
    const empty = fixture("runc-shim-empty-response.bin");
    const [e] = new FrameReader().push(empty);
    expect(encodeFrame(e!.streamId, TYPE_RESPONSE, 0, ttrpc.Response.encode({}).finish())).toEqual(Buffer.from(empty));
  });
});

describe("task events", () => {
  it("names and encodes TaskExit exactly as runc's shim forwards it", () => {
    const [f] = new FrameReader().push(fixture("runc-shim-task-exit.bin"));
    const req = ttrpc.Request.decode(f!.data);
    expect(`${req.service}/${req.method}`).toBe("containerd.services.events.ttrpc.v1.Events/Forward");
    const env = containerd.services.events.ttrpc.v1.ForwardRequest.decode(req.payload).envelope!;
    expect(env.topic).toBe("/tasks/exit");
    expect(env.namespace).toBe("default");
    const exit = containerd.events.TaskExit.decode(env.event!.value!);
    expect(exit.containerId).toBe("r1");
    expect(exit.exitStatus).toBe(3);
    const ours = eventAny({ topic: "/tasks/exit", event: exit });
    expect(ours.type_url).toBe(env.event!.type_url);
    expect(Buffer.from(ours.value!)).toEqual(Buffer.from(env.event!.value!));
  });
});

describe("ttrpc server and client", () => {
  let dir = "";
  let server: TtrpcServer | undefined;
  afterEach(() => {
    server?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function serve(): Promise<string> {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "ttrpc-"));
    const sock = path.join(dir, "s.sock");
    server = new TtrpcServer();
    server.register("containerd.task.v2.Task", "Kill", typed(T.KillRequest, google.protobuf.Empty, async (r) => {
      if (r.id !== "k3") throw new TtrpcError(Code.NOT_FOUND, `task ${r.id} not found`);
      return {};
    }));
    server.register("containerd.task.v2.Task", "Wait", typed(T.WaitRequest, T.WaitResponse, async () => {
      await new Promise((r) => setTimeout(r, 50));
      return { exitStatus: 7 };
    }));
    await server.listen(sock);
    return sock;
  }

  it("answers containerd's captured Kill on its stream id with runc's empty answer", async () => {
    const sock = await serve();
    const answer = await new Promise<Buffer>((resolve, reject) => {
      const s = net.connect(sock, () => s.write(fixture("containerd-kill-request.bin")));
      s.once("data", (b: Buffer) => (s.destroy(), resolve(b)));
      s.once("error", reject);
    });
    const [req] = new FrameReader().push(fixture("containerd-kill-request.bin"));
    expect(answer).toEqual(encodeFrame(req!.streamId, TYPE_RESPONSE, 0, new Uint8Array()));
  });

  it("runs calls concurrently, maps errors to gRPC statuses, and refuses unknown methods", async () => {
    const c = await TtrpcClient.connect(`unix://${await serve()}`);
    try {
      const slow = c.call("containerd.task.v2.Task", "Wait", T.WaitRequest.encode({ id: "k3" }).finish());
      await expect(c.call("containerd.task.v2.Task", "Kill", T.KillRequest.encode({ id: "nope", signal: 9 }).finish())).rejects.toMatchObject({ code: Code.NOT_FOUND, message: "task nope not found" });
      expect(T.WaitResponse.decode(await slow).exitStatus).toBe(7);
      await expect(c.call("containerd.task.v2.Task", "Pause", new Uint8Array())).rejects.toMatchObject({ code: Code.UNIMPLEMENTED });
    } finally {
      c.close();
    }
  });
});
