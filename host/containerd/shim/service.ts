// containerd's Task service (runtime v2, containerd.task.v2.Task) for the
// containers of one group, all in one VM. containerd's ids name tasks; in
// the guest a task is an agent container named by that id, and an exec is
// an agent process in it. A task's pid is QEMU's (as Kata reports its
// hypervisor's): guest pids mean nothing on the host, and a host process
// that stands for the task is what containerd's pid means.
import { exitStatusOf, type AgentClient, type RemoteProcess, type RunOptions } from "../../client.js";
import { FractalError, ErrorCode } from "../../../proto/errors.js";
import { containerd, google, io } from "../gen/containerd.js";
import { timestamp, type Publisher } from "../events.js";
import { Code, TtrpcError, TtrpcServer, typed } from "../ttrpc.js";
import type { GuestVm } from "./guest.js";
import type { ShimOptions } from "./options.js";
import { ProcessIo, type StdioPaths } from "./stdio.js";
import { ociProcess, preparedRoot, readSpec, runOptions, type OciProcess } from "./translate.js";

const T = containerd.task.v2;
const Status = containerd.v1.types.Status;
const Empty = google.protobuf.Empty;
export const TASK_SERVICE = "containerd.task.v2.Task";
/** What a task whose VM died reports, as Kata does. */
const VM_GONE_STATUS = 255;

interface Proc {
  execId: string;
  status: containerd.v1.types.Status;
  stdio: StdioPaths;
  terminal: boolean;
  io?: ProcessIo;
  remote?: RemoteProcess;
  exitStatus: number;
  exitedAtMs: number;
  exited: Promise<void>;
  markExited: () => void;
  /** An exec's process spec, until it starts. */
  execSpec?: OciProcess;
}

interface Task {
  id: string;
  bundle: string;
  run: RunOptions;
  init: Proc;
  execs: Map<string, Proc>;
  /** The agent's id for the container (crun's name for it in the guest). */
  agentId: string;
}

function newProc(execId: string, stdio: StdioPaths, terminal: boolean): Proc {
  let markExited!: () => void;
  const exited = new Promise<void>((r) => (markExited = r));
  return { execId, status: Status.CREATED, stdio, terminal, exitStatus: 0, exitedAtMs: 0, exited, markExited };
}

/** The agent's error codes as the gRPC codes containerd's errdefs understand; others are UNKNOWN. */
const GRPC_CODES = new Map<ErrorCode, Code>([
  [ErrorCode.NOT_FOUND, Code.NOT_FOUND],
  [ErrorCode.CONTAINER_NOT_FOUND, Code.NOT_FOUND],
  [ErrorCode.NOT_RUNNING, Code.NOT_FOUND],
  [ErrorCode.ALREADY_EXISTS, Code.ALREADY_EXISTS],
  [ErrorCode.INVALID_ARGUMENT, Code.INVALID_ARGUMENT],
  [ErrorCode.COMMAND_NOT_FOUND, Code.INVALID_ARGUMENT],
  [ErrorCode.COMMAND_NOT_EXECUTABLE, Code.INVALID_ARGUMENT],
]);

function grpc(err: unknown): TtrpcError {
  if (err instanceof TtrpcError) return err;
  const code = err instanceof FractalError ? (GRPC_CODES.get(err.code) ?? Code.UNKNOWN) : Code.UNKNOWN;
  return new TtrpcError(code, (err as Error).message);
}

export class TaskService {
  private readonly tasks = new Map<string, Task>();
  /** Called when the last task is gone and containerd asked the shim to shut down. */
  onShutdown?: () => void;

  constructor(
    private readonly vm: GuestVm,
    private readonly events: Publisher,
    private readonly options: ShimOptions,
    private readonly log: (msg: string) => void,
    /** Log each call and its duration (containerd's -debug). */
    private readonly debug = false,
  ) {
    vm.onGone = () => this.vmGone();
  }

  register(server: TtrpcServer): void {
    const reg = <Req, Res>(method: string, req: { decode(b: Uint8Array): Req }, res: { encode(m: Res): { finish(): Uint8Array } }, fn: (r: Req) => Promise<Res>) =>
      server.register(TASK_SERVICE, method, typed(req, res, async (r) => {
        const t0 = performance.now();
        try {
          const out = await fn(r);
          if (this.debug) this.log(`${method} ${(performance.now() - t0).toFixed(1)} ms`);
          return out;
        } catch (err) {
          const e = grpc(err);
          this.log(`${method}: ${e.message}`);
          throw e;
        }
      }));
    reg("Create", T.CreateTaskRequest, T.CreateTaskResponse, (r) => this.create(r));
    reg("Start", T.StartRequest, T.StartResponse, (r) => this.start(r));
    reg("Delete", T.DeleteRequest, T.DeleteResponse, (r) => this.delete(r));
    reg("Exec", T.ExecProcessRequest, Empty, (r) => this.exec(r));
    reg("ResizePty", T.ResizePtyRequest, Empty, (r) => this.resize(r));
    reg("CloseIO", T.CloseIORequest, Empty, (r) => this.closeIO(r));
    reg("Kill", T.KillRequest, Empty, (r) => this.kill(r));
    reg("Wait", T.WaitRequest, T.WaitResponse, (r) => this.wait(r));
    reg("State", T.StateRequest, T.StateResponse, async (r) => this.state(r));
    reg("Pids", T.PidsRequest, T.PidsResponse, (r) => this.pids(r));
    reg("Stats", T.StatsRequest, T.StatsResponse, (r) => this.stats(r));
    reg("Connect", T.ConnectRequest, T.ConnectResponse, async () => ({ shimPid: process.pid, taskPid: this.vm.pid, version: "fractal" }));
    reg("Shutdown", T.ShutdownRequest, Empty, async (r) => this.shutdown(r));
    const unimplemented = (what: string) => async () => {
      throw new TtrpcError(Code.UNIMPLEMENTED, `${what} is not implemented by the fractal runtime`);
    };
    reg("Pause", T.PauseRequest, Empty, unimplemented("pause"));
    reg("Resume", T.ResumeRequest, Empty, unimplemented("resume"));
    reg("Checkpoint", T.CheckpointTaskRequest, Empty, unimplemented("checkpoint"));
    reg("Update", T.UpdateTaskRequest, Empty, unimplemented("update"));
  }

  private task(id: string): Task {
    const t = this.tasks.get(id);
    if (!t) throw new TtrpcError(Code.NOT_FOUND, `task ${id} not found`);
    return t;
  }

  private proc(id: string, execId: string | null | undefined): Proc {
    const t = this.task(id);
    if (!execId) return t.init;
    const p = t.execs.get(execId);
    if (!p) throw new TtrpcError(Code.NOT_FOUND, `exec ${execId} of task ${id} not found`);
    return p;
  }

  private async create(r: containerd.task.v2.CreateTaskRequest): Promise<containerd.task.v2.ICreateTaskResponse> {
    const id = r.id;
    if (this.tasks.has(id)) throw new TtrpcError(Code.ALREADY_EXISTS, `task ${id} already exists`);
    if (r.checkpoint) throw new TtrpcError(Code.UNIMPLEMENTED, "restoring from a checkpoint is not implemented by the fractal runtime");
    // The runtime options (r.options) came to `start` on its stdin already: the shim's settings are loaded.
    const spec = readSpec(r.bundle);
    const root = preparedRoot(r.rootfs);
    const stdio = { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr };
    const run = runOptions(id, spec, root, r.stdin !== "", this.log);
    // Boots the VM for the group's first task; later ones find it up.
    await this.vm.agent(root.shareRoot);
    const task: Task = { id, bundle: r.bundle, run, init: newProc("", stdio, r.terminal), execs: new Map(), agentId: "" };
    this.tasks.set(id, task);
    const pid = this.vm.pid;
    void this.events.publish({
      topic: "/tasks/create",
      event: { containerId: id, bundle: r.bundle, rootfs: r.rootfs, io: { ...stdio, terminal: r.terminal }, checkpoint: r.checkpoint, pid },
    });
    return { pid };
  }

  private async start(r: containerd.task.v2.StartRequest): Promise<containerd.task.v2.IStartResponse> {
    const t = this.task(r.id);
    const p = this.proc(r.id, r.execId);
    if (p.status !== Status.CREATED) throw new TtrpcError(Code.FAILED_PRECONDITION, `${r.execId ? `exec ${r.execId}` : `task ${r.id}`} was already started`);
    const agent = await this.vm.running();
    if (!r.execId) {
      const started = await agent.run({ ...t.run, detach: false });
      t.agentId = started.id;
      p.remote = started.proc!; // attached runs return their process
    } else {
      p.remote = await this.startExec(agent, t, p);
    }
    p.io = new ProcessIo(p.stdio, p.remote, p.terminal);
    p.status = Status.RUNNING;
    const pid = this.vm.pid;
    void this.watch(t, p);
    if (r.execId) void this.events.publish({ topic: "/tasks/exec-started", event: { containerId: r.id, execId: r.execId, pid } });
    else void this.events.publish({ topic: "/tasks/start", event: { containerId: r.id, pid } });
    return { pid };
  }

  private async startExec(agent: AgentClient, t: Task, p: Proc): Promise<RemoteProcess> {
    const { args, env, cwd, user, tty } = ociProcess(p.execSpec ?? {});
    return agent.exec({ argv: args, env, replaceEnv: true, cwd, container: t.agentId, userSpec: user, tty, stdin: p.stdio.stdin !== "" });
  }

  /** Waits for a process's end and tells containerd: OOM first (as runc's shim), then the exit. */
  private async watch(t: Task, p: Proc): Promise<void> {
    let status = VM_GONE_STATUS;
    let oom = false;
    try {
      const r = await p.remote!.wait();
      status = exitStatusOf(r);
      oom = "oomKilled" in r && r.oomKilled === true;
    } catch (err) {
      if (p.status === Status.STOPPED) return; // vmGone() reported it
      this.log(`task ${t.id}${p.execId ? ` exec ${p.execId}` : ""}: ${(err as Error).message}`);
    }
    if (oom) await this.events.publish({ topic: "/tasks/oom", event: { containerId: t.id } });
    this.exited(t, p, status);
  }

  private exited(t: Task, p: Proc, status: number): void {
    if (p.status === Status.STOPPED) return;
    p.status = Status.STOPPED;
    p.exitStatus = status;
    p.exitedAtMs = Date.now();
    p.io?.close();
    p.markExited();
    void this.events.publish({
      topic: "/tasks/exit",
      event: { containerId: t.id, id: p.execId || t.id, pid: this.vm.pid, exitStatus: status, exitedAt: timestamp(p.exitedAtMs) },
    });
  }

  /** The VM died: every process in it is over. */
  private vmGone(): void {
    for (const t of this.tasks.values()) {
      for (const p of [...t.execs.values(), t.init]) if (p.status !== Status.STOPPED) this.exited(t, p, VM_GONE_STATUS);
    }
  }

  private async delete(r: containerd.task.v2.DeleteRequest): Promise<containerd.task.v2.IDeleteResponse> {
    const t = this.task(r.id);
    const p = this.proc(r.id, r.execId);
    if (p.status === Status.RUNNING) throw new TtrpcError(Code.FAILED_PRECONDITION, `cannot delete ${r.execId ? `exec ${r.execId}` : `task ${r.id}`}: it is running`);
    if (p.status === Status.CREATED) {
      p.status = Status.STOPPED;
      p.exitedAtMs = Date.now();
      p.markExited();
    }
    if (r.execId) {
      t.execs.delete(r.execId);
    } else {
      if (t.agentId && this.vm.booted) {
        try {
          await (await this.vm.running()).remove(t.agentId, true);
        } catch (err) {
          this.log(`removing container ${t.id} in the VM: ${(err as Error).message}`);
        }
      }
      this.tasks.delete(r.id);
      void this.events.publish({
        topic: "/tasks/delete",
        event: { containerId: r.id, pid: this.vm.pid, exitStatus: p.exitStatus, exitedAt: timestamp(p.exitedAtMs), id: r.id },
      });
    }
    return { pid: this.vm.pid, exitStatus: p.exitStatus, exitedAt: timestamp(p.exitedAtMs) };
  }

  private async exec(r: containerd.task.v2.ExecProcessRequest): Promise<google.protobuf.IEmpty> {
    const t = this.task(r.id);
    if (t.init.status !== Status.RUNNING) throw new TtrpcError(Code.FAILED_PRECONDITION, `task ${r.id} is not running`);
    if (t.execs.has(r.execId)) throw new TtrpcError(Code.ALREADY_EXISTS, `exec ${r.execId} already exists in task ${r.id}`);
    let spec: OciProcess;
    try {
      spec = JSON.parse(Buffer.from(r.spec?.value ?? new Uint8Array()).toString("utf8")) as OciProcess;
    } catch (err) {
      throw new TtrpcError(Code.INVALID_ARGUMENT, `exec ${r.execId}: its process spec is not JSON: ${(err as Error).message}`);
    }
    if (!spec.args?.length) throw new TtrpcError(Code.INVALID_ARGUMENT, `exec ${r.execId}: no command`);
    const p = newProc(r.execId, { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr }, r.terminal);
    p.execSpec = spec;
    t.execs.set(r.execId, p);
    void this.events.publish({ topic: "/tasks/exec-added", event: { containerId: r.id, execId: r.execId } });
    return {};
  }

  private async resize(r: containerd.task.v2.ResizePtyRequest): Promise<google.protobuf.IEmpty> {
    const p = this.proc(r.id, r.execId);
    if (p.remote && p.status === Status.RUNNING && r.width > 0 && r.height > 0) await p.remote.resize(r.width, r.height);
    return {};
  }

  private async closeIO(r: containerd.task.v2.CloseIORequest): Promise<google.protobuf.IEmpty> {
    const p = this.proc(r.id, r.execId);
    if (r.stdin) await p.io?.closeStdin();
    return {};
  }

  private async kill(r: containerd.task.v2.KillRequest): Promise<google.protobuf.IEmpty> {
    const t = this.task(r.id);
    const p = this.proc(r.id, r.execId);
    if (p.status === Status.STOPPED) throw new TtrpcError(Code.NOT_FOUND, `process already finished`);
    if (p.status === Status.CREATED) {
      // Never started: it ends here, as runc's shim ends a created init.
      this.exited(t, p, 128 + r.signal);
      return {};
    }
    if (!r.execId) await (await this.vm.running()).kill(t.agentId, r.signal);
    else await p.remote!.signal(r.signal, true);
    return {};
  }

  private async wait(r: containerd.task.v2.WaitRequest): Promise<containerd.task.v2.IWaitResponse> {
    const p = this.proc(r.id, r.execId);
    await p.exited;
    return { exitStatus: p.exitStatus, exitedAt: timestamp(p.exitedAtMs) };
  }

  private state(r: containerd.task.v2.StateRequest): containerd.task.v2.IStateResponse {
    const t = this.task(r.id);
    const p = this.proc(r.id, r.execId);
    return {
      id: r.execId || r.id,
      bundle: t.bundle,
      pid: this.vm.pid,
      status: p.status,
      ...p.stdio,
      terminal: p.terminal,
      exitStatus: p.exitStatus,
      exitedAt: p.exitedAtMs ? timestamp(p.exitedAtMs) : undefined,
      execId: r.execId,
    };
  }

  /** The processes in the container, as guest pids (crun ps in the guest). */
  private async pids(r: containerd.task.v2.PidsRequest): Promise<containerd.task.v2.IPidsResponse> {
    const t = this.task(r.id);
    if (t.init.status !== Status.RUNNING) return { processes: [] };
    const out = await this.guestOutput(["/bin/crun", "ps", "--format=json", t.agentId]);
    let pids: number[];
    try {
      pids = JSON.parse(out) as number[];
    } catch {
      throw new TtrpcError(Code.INTERNAL, `crun ps for ${r.id} printed ${JSON.stringify(out.slice(0, 200))}`);
    }
    return { processes: pids.map((pid) => ({ pid })) };
  }

  /** cgroup v2 figures of the container's cgroup in the guest, as containerd's cgroups v2 Metrics. */
  private async stats(r: containerd.task.v2.StatsRequest): Promise<containerd.task.v2.IStatsResponse> {
    const t = this.task(r.id);
    if (t.init.status !== Status.RUNNING) throw new TtrpcError(Code.NOT_FOUND, `task ${r.id} is not running`);
    const cg = `/sys/fs/cgroup/fractal/${t.agentId}`;
    const out = await this.guestOutput(["/bin/sh", "-c", `cd ${cg} && cat memory.current memory.max pids.current && cat cpu.stat`]);
    const [mem, memMax, pids, ...cpu] = out.split("\n");
    const cpuStat = new Map(cpu.map((l) => l.split(" ") as [string, string]));
    const n = (s: string | undefined) => Number(s ?? 0) || 0;
    const metrics = io.containerd.cgroups.v2.Metrics.encode({
      pids: { current: n(pids) },
      cpu: { usageUsec: n(cpuStat.get("usage_usec")), userUsec: n(cpuStat.get("user_usec")), systemUsec: n(cpuStat.get("system_usec")) },
      // No limit of its own: the VM's memory is what it can have.
      memory: { usage: n(mem), usageLimit: memMax === "max" ? this.options.memMiB * 1024 * 1024 : n(memMax) },
    }).finish();
    return { stats: { type_url: "io.containerd.cgroups.v2.Metrics", value: metrics } };
  }

  private async guestOutput(argv: string[]): Promise<string> {
    const agent = await this.vm.running();
    const p = await agent.exec({ argv });
    const chunks: Uint8Array[] = [];
    p.onStdout((c) => void chunks.push(c));
    const st = await p.wait();
    const out = Buffer.concat(chunks).toString("utf8");
    if (exitStatusOf(st) !== 0) throw new TtrpcError(Code.INTERNAL, `${argv.join(" ")} in the VM exited ${exitStatusOf(st)}`);
    return out;
  }

  private async shutdown(r: containerd.task.v2.ShutdownRequest): Promise<google.protobuf.IEmpty> {
    // Like runc's shim serving a group: only the last task's shutdown ends it.
    if (this.tasks.size > 0 && !r.now) return {};
    this.log(`shutting down (${r.now ? "now" : "no tasks left"})`);
    setTimeout(() => this.onShutdown?.(), 10);
    return {};
  }
}
