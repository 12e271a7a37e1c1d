// The agent's running processes, by handle. A handle stays valid until a
// wait has reported the exit (or the owning connection closed), so signal
// and resize on an exited process say "has exited" rather than hitting a pid
// the kernel may have reused.
import { ErrorCode, FractalError } from "../../proto/errors.js";
import type { Child, ExitResult } from "./child.js";

export type ProcState = { kind: "running"; child: Child } | { kind: "exited"; status: ExitResult };

export interface ProcEntry {
  readonly handle: number;
  /** The id of the Exec request that started it, on its connection (a wait may name it instead of the handle). */
  readonly requestId: number;
  readonly child: Child;
  state: ProcState;
}

export class ProcessTable {
  private next = 1;
  private readonly entries = new Map<number, ProcEntry>();
  private readonly byRequest = new Map<number, ProcEntry>();

  add(child: Child, requestId: number): ProcEntry {
    const entry: ProcEntry = { handle: this.next++, requestId, child, state: { kind: "running", child } };
    this.entries.set(entry.handle, entry);
    this.byRequest.set(requestId, entry);
    child.done.then((status) => (entry.state = { kind: "exited", status }));
    return entry;
  }

  get(handle: number): ProcEntry {
    const e = this.entries.get(handle);
    if (!e) throw new FractalError(ErrorCode.NO_SUCH_PROCESS, `no process with handle ${handle}`);
    return e;
  }

  /** The handle of the process the Exec request `requestId` started, until a wait reported its exit. */
  startedBy(requestId: number): number {
    const e = this.byRequest.get(requestId);
    if (!e) throw new FractalError(ErrorCode.NO_SUCH_PROCESS, `request ${requestId} started no process on this connection (or it was waited for)`);
    return e.handle;
  }

  /** The running child, or an error naming the operation that needed it. */
  requireRunning(handle: number, op: string): Child {
    const e = this.get(handle);
    if (e.state.kind !== "running") throw new FractalError(ErrorCode.NOT_RUNNING, `cannot ${op}: process ${handle} has exited`);
    return e.state.child;
  }

  remove(handle: number): void {
    const e = this.entries.get(handle);
    if (!e) return;
    this.entries.delete(handle);
    this.byRequest.delete(e.requestId);
  }

  /** Entries whose child has not exited yet. */
  running(): ProcEntry[] {
    return [...this.entries.values()].filter((e) => e.state.kind === "running");
  }

  get size(): number {
    return this.entries.size;
  }
}
