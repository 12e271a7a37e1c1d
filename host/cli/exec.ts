// `fractal-host exec`: run a command in the agent, like `ssh -t host cmd` or
// `docker exec -it`. Exits with the remote status (128+N for signal N).
import os from "node:os";
import { LINUX_SIGNALS } from "../../proto/signals.js";
import { AgentClient, exitStatusOf, type ExecOptions, type RemoteProcess } from "../client.js";
import { BARE, envFlags, flag, parseFlags, usageError, value, values } from "./args.js";
import { enterRawMode, fdWriter, windowSize } from "./terminal.js";
import { mark } from "./timing.js";

/** cpu's default namespace. */
export const DEFAULT_NAMESPACE = "/lib:/lib64:/usr:/bin:/etc:/home";
export const execHelp = `usage: fractal-host [--connect URL | --vm NAME] exec [OPTIONS] -- CMD [ARG...]
       fractal-host [--connect URL | --vm NAME] exec [OPTIONS] CONTAINER CMD [ARG...]

Runs CMD in the guest (after --), or inside a running container (as docker
exec), with its output and exit status.

  -i, --interactive      forward stdin (without it the command reads nothing)
  -t, --tty              run on a pseudo-terminal; the local terminal goes raw
  -e, --env K=V          set a variable (K alone copies it from here); repeatable
  -w, --workdir DIR      working directory in the guest
  -u, --user UID[:GID]   numeric user (and group) to run as; in a container
                         also names from its /etc/passwd and /etc/group
      --vm NAME          run in the VM started by \`fractal-host boot --name NAME\`
      --namespace[=SPEC] run in a private mount namespace of host directories
                         (the VM needs --host-root), like u-root cpu's
                         -namespace: SPEC is a colon-separated list of PATH or
                         LOCAL=REMOTE; bare: ${DEFAULT_NAMESPACE}; "" for
                         none. The host's environment and, when it is inside
                         the namespace, current directory come along.
      --env-all          with --namespace: forward the whole host environment
      --env-none         with --namespace: forward none of it
  -h, --help             this text

Without -t, stdout and stderr stay separate and binary-safe, and Ctrl-C is
sent to the remote process group as SIGINT. With -t, Ctrl-C is a byte the
remote terminal turns into SIGINT, and window resizes are forwarded. Signals
sent to this command (HUP, INT, QUIT, USR1, USR2, ALRM, TERM, CONT, ...) go to
the remote process group.

Exit status: the remote command's (128+N if signal N killed it); 127 when it
was not found, 126 when it could not be executed; 125 when fractal failed.
`;

const specs = [
  { long: "interactive", short: "i" },
  { long: "tty", short: "t" },
  { long: "env", short: "e", value: true, repeat: true },
  { long: "workdir", short: "w", value: true },
  { long: "user", short: "u", value: true },
  { long: "vm", value: true },
  { long: "namespace", optionalValue: true },
  { long: "env-all" },
  { long: "env-none" },
  { long: "help", short: "h" },
];

/** What --namespace forwards of the host environment unless told otherwise. */
const FORWARDED_ENV = ["PATH", "HOME", "TERM", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "USER", "LOGNAME", "SHELL", "TZ", "EDITOR"];

/** Parses a cpu-style namespace SPEC. */
export function parseNamespace(spec: string): { local: string; remote: string }[] {
  if (spec === "" || spec === '""') return [];
  return spec.split(":").map((entry) => {
    const [local, remote = local] = entry.split("=");
    if (!local?.startsWith("/") || !remote.startsWith("/")) throw usageError("exec", `bad --namespace entry "${entry}": expected /PATH or /LOCAL=/REMOTE`);
    return { local, remote };
  });
}

/** The host's current directory as seen in the namespace, if any entry covers it. */
export function cwdInNamespace(cwd: string, ns: { local: string; remote: string }[]): string | undefined {
  for (const { local, remote } of ns) {
    if (cwd === remote || cwd.startsWith(remote.endsWith("/") ? remote : `${remote}/`)) return local + cwd.slice(remote.length);
  }
  return undefined;
}

// Signals a user can send to the CLI that the remote side should see
// instead, as docker's sig-proxy does: every one a process may catch, but
// those of the CLI's own job control and faults (TSTP, TTIN, TTOU, CHLD,
// PIPE, SEGV...) and WINCH, which becomes a resize on a terminal.
const FORWARDED = ["HUP", "INT", "QUIT", "USR1", "USR2", "ALRM", "TERM", "CONT", "XCPU", "XFSZ", "VTALRM", "PROF", "PWR"] as const;

export interface ExecCommand {
  options: ExecOptions;
  interactive: boolean;
  vm?: string;
}

/** Parses exec's arguments into options; pure, so tests can pin it. */
export function parseExec(args: string[], localEnv: NodeJS.ProcessEnv): ExecCommand | "help" {
  const p = parseFlags(args, specs, "exec");
  if (flag(p, "help")) return "help";
  // Words before '--' name a container (docker's `exec CONTAINER CMD`);
  // guest commands follow '--'.
  let container: string | undefined;
  if (!p.dashdash && p.rest.length > 0) {
    container = p.rest[0]!;
    p.rest = p.rest[1] === "--" ? p.rest.slice(2) : p.rest.slice(1);
    if (p.rest.length === 0) throw usageError("exec", `no command given for container ${container} (guest commands go after --)`);
  }
  if (p.rest.length === 0) throw usageError("exec", "no command given");
  const env = envFlags(values(p, "env"), localEnv, "exec");
  const options: ExecOptions = { argv: p.rest, env, cwd: value(p, "workdir"), stdin: flag(p, "interactive"), container };
  const ns = value(p, "namespace");
  if (ns !== undefined && container !== undefined) throw usageError("exec", "--namespace runs in the guest, not in a container");
  if (ns !== undefined) {
    if (flag(p, "env-all") && flag(p, "env-none")) throw usageError("exec", "--env-all and --env-none exclude each other");
    // Bare --namespace means cpu's default; --namespace= (or ="") means none.
    options.namespace = parseNamespace(ns === BARE ? DEFAULT_NAMESPACE : ns);
    const keys = flag(p, "env-none") ? [] : flag(p, "env-all") ? Object.keys(localEnv) : FORWARDED_ENV;
    const hostEnv: Record<string, string> = {};
    for (const k of keys) if (localEnv[k] !== undefined) hostEnv[k] = localEnv[k]!; // checked in the condition
    options.env = { ...hostEnv, ...env };
    options.cwd ??= cwdInNamespace(process.cwd(), options.namespace);
  } else if (flag(p, "env-all") || flag(p, "env-none")) {
    throw usageError("exec", "--env-all and --env-none go with --namespace");
  }
  const user = value(p, "user");
  if (user !== undefined && container !== undefined) options.userSpec = user;
  else if (user !== undefined) options.user = parseUser(user);
  if (flag(p, "tty")) options.tty = { ...windowSize(), term: localEnv.TERM || "xterm-256color" };
  return { options, interactive: flag(p, "interactive"), vm: value(p, "vm") };
}

function parseUser(u: string): { uid: number; gid: number } {
  const m = /^(\d+)(?::(\d+))?$/.exec(u);
  if (!m) throw usageError("exec", `bad --user "${u}": expected a numeric UID[:GID]`);
  const uid = Number(m[1]);
  const gid = m[2] === undefined ? uid : Number(m[2]);
  if (uid > 0xffffffff || gid > 0xffffffff) throw usageError("exec", `bad --user "${u}": id out of range`);
  return { uid, gid };
}

/** Runs the command; resolves to the exit status the CLI should exit with. */
export async function runExec(client: AgentClient, cmd: ExecCommand): Promise<number> {
  // The CLI always waits for the exit: ask for it with the exec.
  const proc = await client.exec({ ...cmd.options, waitAhead: true });
  mark("spawn");
  return followProcess(proc, cmd.options.tty !== undefined, cmd.interactive);
}

/**
 * Connects a started process (or attached container) to this terminal:
 * output, stdin when `input`, signals, window size with a tty, raw mode.
 * Resolves to its exit status once every byte of output was written.
 */
export async function followProcess(proc: RemoteProcess, tty: boolean, input: boolean): Promise<number> {
  const cleanups: (() => void)[] = [tty ? enterRawMode() : () => {}];
  try {
    // Signal handlers first: output already queued is written as soon as a
    // sink is set, and whoever sees it may signal us at once.
    cleanups.push(forwardSignals(proc));
    const out = fdWriter(1);
    const err = fdWriter(2);
    proc.onStdout(out.write);
    if (!tty) proc.onStderr(err.write);
    if (input) cleanups.push(forwardStdin(proc));
    if (tty && process.stdout.isTTY) {
      const onResize = () => {
        const { cols, rows } = windowSize();
        proc.resize(cols, rows).catch(() => {});
      };
      process.on("SIGWINCH", onResize);
      cleanups.push(() => process.off("SIGWINCH", onResize));
    }
    const status = exitStatusOf(await proc.wait());
    mark("run");
    await Promise.all([out.close(), err.close()]);
    return status;
  } finally {
    for (const c of cleanups.reverse()) c();
  }
}

function forwardStdin(proc: RemoteProcess): () => void {
  // A pull loop: the next read waits until the agent took the last chunk
  // within its credit, so nothing buffers here without bound. (Node-style
  // pause()/resume() on process.stdin lost the 'end' event under Bun now and
  // then, leaving the remote side waiting for EOF forever.)
  const reader = Bun.stdin.stream().getReader();
  let stopped = false;
  void (async () => {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || stopped) break;
        await proc.write(value);
      }
      if (!stopped) proc.closeStdin();
    } catch {
      // The process or the connection went away: nothing left to feed.
    }
  })();
  return () => {
    stopped = true;
    void reader.cancel().catch(() => {});
  };
}

function forwardSignals(proc: RemoteProcess): () => void {
  const handlers: [string, () => void][] = [];
  for (const name of FORWARDED) {
    // With a raw terminal Ctrl-C is just a byte; SIGINT here then means
    // someone ran kill(1) on us, which still belongs to the remote side.
    // The number sent is Linux's whatever the host numbers it.
    const h = () => void proc.signal(LINUX_SIGNALS[name]!, true).catch(() => {});
    const sig = `SIG${name}` as NodeJS.Signals;
    // A host without this signal (PWR on macOS) just does not forward it.
    if (!(sig in os.constants.signals)) continue;
    process.on(sig, h);
    handlers.push([sig, h]);
  }
  return () => {
    for (const [name, h] of handlers) process.off(name as NodeJS.Signals, h);
  };
}
