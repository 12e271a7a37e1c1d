// A child process on pipes or on a PTY, behind one small interface. This is
// the only file that calls Bun.spawn; handlers see Child, not Bun types.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { pipe } from "../../proto/libc.js";

export interface ChildSpec {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  uid?: number;
  gid?: number;
  tty?: { cols: number; rows: number };
}

/** Where the child's output goes. Each returns once the chunk is sent, which paces the reader. */
export interface ChildOutput {
  stdout(chunk: Uint8Array): Promise<void>;
  stderr(chunk: Uint8Array): Promise<void>;
}

export type ExitResult = { kind: "exited"; code: number } | { kind: "signaled"; signal: number };

export interface Child {
  readonly pid: number;
  readonly hasTty: boolean;
  /** Resolves once the bytes were handed to the child (pipe) or the PTY. */
  writeStdin(chunk: Uint8Array): Promise<void>;
  closeStdin(): void;
  resize(cols: number, rows: number): void;
  signal(sig: number, group: boolean): void;
  /** Exit status, resolved only after every byte of output was passed to ChildOutput. */
  readonly done: Promise<ExitResult>;
}

/**
 * The output pipes' buffer. Bun reads whatever a pipe holds, up to 256 KiB at
 * a time; with Linux's default 64 KiB a fast writer's output arrived in
 * reads of about 13 KiB, and each read costs a frame and a socket write.
 * The price: a command whose client stops reading holds up to 2 MiB of the
 * guest's kernel memory in its two pipes before it blocks, not 128 KiB.
 */
const OUTPUT_PIPE_BYTES = 1 << 20;

/** How long to wait for PTY EOF after the child exited. */
const PTY_EOF_GRACE_MS = 2000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const signalNumbers = os.constants.signals as Record<string, number>;

/** Starts a child; throws FractalError COMMAND_NOT_FOUND / COMMAND_NOT_EXECUTABLE / INVALID_ARGUMENT as a shell would report them. */
export function startChild(spec: ChildSpec, out: ChildOutput): Child {
  const file = resolveCommand(spec.argv[0]!, spec.env.PATH ?? "/usr/local/bin:/usr/bin:/bin", spec.cwd);
  const argv = [file, ...spec.argv.slice(1)];
  try {
    return spec.tty ? startPty(spec, argv, out) : startPipes(spec, argv, out);
  } catch (err) {
    throw spawnError(spec.argv[0]!, err);
  }
}

function resolveCommand(cmd: string, pathVar: string, cwd: string): string {
  if (cmd === "") throw new FractalError(ErrorCode.INVALID_ARGUMENT, "empty command");
  if (cmd.includes("/")) {
    const abs = path.resolve(cwd, cmd);
    if (!fs.existsSync(abs)) throw new FractalError(ErrorCode.COMMAND_NOT_FOUND, `${cmd}: no such file or directory`);
    // As sh does: a file that exists but cannot be executed is "permission
    // denied" (126). Mode bits first: even root needs one x bit to exec.
    const st = fs.statSync(abs);
    if (st.isDirectory()) throw new FractalError(ErrorCode.COMMAND_NOT_EXECUTABLE, `${cmd}: is a directory`);
    let ok = (st.mode & 0o111) !== 0;
    try {
      fs.accessSync(abs, fs.constants.X_OK);
    } catch {
      ok = false;
    }
    if (!ok) throw new FractalError(ErrorCode.COMMAND_NOT_EXECUTABLE, `${cmd}: permission denied`);
    return abs;
  }
  const found = Bun.which(cmd, { PATH: pathVar, cwd });
  if (!found) throw new FractalError(ErrorCode.COMMAND_NOT_FOUND, `${cmd}: command not found`);
  return found;
}

function spawnError(cmd: string, err: unknown): FractalError {
  if (err instanceof FractalError) return err;
  const e = err as NodeJS.ErrnoException;
  switch (e.code) {
    case "EACCES":
    case "EPERM":
      return new FractalError(ErrorCode.COMMAND_NOT_EXECUTABLE, `${cmd}: permission denied`);
    case "ENOENT":
      return new FractalError(ErrorCode.COMMAND_NOT_FOUND, `${cmd}: no such file or directory`);
    case "ENOEXEC":
      return new FractalError(ErrorCode.COMMAND_NOT_EXECUTABLE, `${cmd}: exec format error`);
    default:
      return new FractalError(ErrorCode.INTERNAL, `${cmd}: cannot start: ${e.message}`);
  }
}

function exitOf(proc: { exitCode: number | null; signalCode: string | number | null }): ExitResult {
  if (proc.signalCode !== null && proc.signalCode !== undefined) {
    const n = typeof proc.signalCode === "number" ? proc.signalCode : signalNumbers[proc.signalCode];
    return { kind: "signaled", signal: n ?? 0 };
  }
  return { kind: "exited", code: proc.exitCode ?? 0 };
}

function killer(pid: number) {
  return (sig: number, group: boolean) => {
    try {
      process.kill(group ? -pid : pid, sig);
    } catch (err) {
      // ESRCH: it exited between our check and the kill; nothing to signal.
      if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
    }
  };
}

async function drain(stream: ReadableStream<Uint8Array>, sink: (c: Uint8Array) => Promise<void>): Promise<void> {
  const reader = stream.getReader();
  let sinkOk = true;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    // Once the receiver is gone, keep reading so the child never blocks on a
    // full pipe, but throw the bytes away.
    if (sinkOk) await sink(value).catch(() => (sinkOk = false));
  }
}

/** Closes fds this process no longer needs; one that is already closed is no error. */
function closeFds(...fds: number[]): void {
  for (const fd of fds) {
    try {
      fs.closeSync(fd);
    } catch {
      // EBADF: never opened, or closed already
    }
  }
}

function startPipes(spec: ChildSpec, argv: string[], out: ChildOutput): Child {
  // Real pipes, not Bun's "pipe" (a socketpair): `echo x > /dev/stdout`
  // and `cat /dev/stdin` reopen the descriptor through /proc, which a
  // socket refuses (ENXIO). Bun reads and writes our ends without blocking.
  const stdinPipe = pipe();
  const stdoutPipe = pipe(OUTPUT_PIPE_BYTES);
  const stderrPipe = pipe(OUTPUT_PIPE_BYTES);
  let proc: ReturnType<typeof Bun.spawn>;
  try {
    proc = Bun.spawn(argv, {
      cwd: spec.cwd,
      env: spec.env,
      uid: spec.uid,
      gid: spec.gid,
      stdin: stdinPipe.read,
      stdout: stdoutPipe.write,
      stderr: stderrPipe.write,
      // Own process group, so a forwarded Ctrl-C (SIGINT to the group) reaches
      // a pipeline the way it would from a terminal.
      detached: true,
    });
  } catch (err) {
    closeFds(stdinPipe.write, stdoutPipe.read, stderrPipe.read);
    throw err;
  } finally {
    // The child's ends are the child's: while we held a write end, its
    // output would never reach EOF.
    closeFds(stdinPipe.read, stdoutPipe.write, stderrPipe.write);
  }
  const stdin = Bun.file(stdinPipe.write).writer();
  let stdinOpen = true;
  const closeStdin = () => {
    if (!stdinOpen) return;
    stdinOpen = false;
    // A FileSink on a number does not own it: the child reads EOF only
    // once the fd itself is closed, after what was written is flushed.
    Promise.resolve()
      .then(() => stdin.end())
      .catch(() => {})
      .finally(() => closeFds(stdinPipe.write));
  };
  const output = (fd: number, sink: (c: Uint8Array) => Promise<void>) => drain(Bun.file(fd).stream(), sink).finally(() => closeFds(fd));
  const outputs = Promise.all([output(stdoutPipe.read, out.stdout), output(stderrPipe.read, out.stderr)]);
  const done = (async () => {
    await proc.exited;
    // Stdin the client still holds open goes nowhere now (ssh closes the
    // channel's input too); the fd must not outlive the process.
    closeStdin();
    await outputs;
    return exitOf(proc);
  })();
  return {
    pid: proc.pid,
    hasTty: false,
    async writeStdin(chunk) {
      if (!stdinOpen) return;
      try {
        stdin.write(chunk);
        await stdin.flush();
      } catch {
        // EPIPE: the child closed its stdin; later bytes have nowhere to go.
        closeStdin();
      }
    },
    closeStdin,
    resize() {
      throw new FractalError(ErrorCode.INVALID_ARGUMENT, `process ${proc.pid} has no terminal to resize`);
    },
    signal: killer(proc.pid),
    done,
  };
}

function startPty(spec: ChildSpec, argv: string[], out: ChildOutput): Child {
  // Bun.Terminal has no way to pause PTY reads, so output that outruns the
  // client queues in the session (bounded only by what the program prints).
  // Interactive programs print little; bulk transfers should use pipes.
  let outputChain: Promise<void> = Promise.resolve();
  let eof!: () => void;
  const ptyClosed = new Promise<void>((resolve) => (eof = resolve));
  const proc = Bun.spawn(argv, {
    cwd: spec.cwd,
    env: spec.env,
    uid: spec.uid,
    gid: spec.gid,
    terminal: {
      cols: spec.tty!.cols || 80,
      rows: spec.tty!.rows || 24,
      name: spec.env.TERM ?? "xterm-256color",
      data(_t, chunk) {
        const c = chunk;
        outputChain = outputChain.then(() => out.stdout(c)).catch(() => {});
      },
      exit() {
        eof();
      },
    },
  });
  const term = proc.terminal!; // spawned with `terminal`, so it is set
  const done = (async () => {
    await proc.exited;
    // The PTY reports EOF once every holder of the slave side closed it, so
    // output written just before exit is read before we report the status.
    // A background job that keeps the slave open would hold that forever;
    // past a grace period we report the exit as ssh does.
    await Promise.race([ptyClosed, sleep(PTY_EOF_GRACE_MS)]);
    await outputChain;
    // The master is ours to close: left to the collector it stays open (a
    // leaked /dev/ptmx descriptor per exec -t) for as long as anything
    // still refers to this process.
    if (!term.closed) term.close();
    return exitOf(proc);
  })();
  return {
    pid: proc.pid,
    hasTty: true,
    async writeStdin(chunk) {
      if (!term.closed) term.write(chunk);
    },
    closeStdin() {
      // A terminal has no half-close: send the EOF character, as a user
      // pressing Ctrl-D would (the line discipline turns it into read() == 0).
      if (!term.closed) term.write("\x04");
    },
    resize(cols, rows) {
      if (!term.closed) term.resize(cols, rows);
    },
    signal: killer(proc.pid),
    done,
  };
}

