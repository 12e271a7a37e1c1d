// Finding a container's command before the runtime is started, so a typo
// gets docker's "not found" (127) or "permission denied" (126) with a clear
// message instead of the runtime's exit status 1.
import path from "node:path";
import { ContainedTree } from "../../oci/tree.js";
import { ErrorCode, FractalError } from "../../proto/errors.js";

function executable(tree: ContainedTree, rel: string): "ok" | "missing" | "denied" {
  // Symlinks are followed inside the rootfs (busybox applets are links to it).
  const r = tree.resolve(rel);
  if (r === undefined) return "missing";
  return r.st.isFile() && (r.st.mode & 0o111) !== 0 ? "ok" : "denied";
}

export function checkCommand(rootfs: string, cmd: string, env: string[], cwd: string): void {
  const tree = new ContainedTree(rootfs);
  if (cmd.includes("/")) {
    // As execve(2) in the container would: an absolute name from its root,
    // a relative one ("./run.sh", "bin/app") from the working directory.
    const rel = path.posix.resolve("/", cwd, cmd).replace(/^\/+/, "");
    const r = executable(tree, rel);
    if (r === "missing") throw new FractalError(ErrorCode.COMMAND_NOT_FOUND, `${cmd}: no such file or directory in the container`);
    if (r === "denied") throw new FractalError(ErrorCode.COMMAND_NOT_EXECUTABLE, `${cmd}: permission denied`);
    return;
  }
  const pathVar = env.find((e) => e.startsWith("PATH="))?.slice(5) ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  let denied = false;
  for (const dir of pathVar.split(":").filter((d) => d !== "")) {
    const r = executable(tree, path.posix.join(dir, cmd).replace(/^\/+/, ""));
    if (r === "ok") return;
    if (r === "denied") denied = true;
  }
  if (denied) throw new FractalError(ErrorCode.COMMAND_NOT_EXECUTABLE, `${cmd}: permission denied`);
  throw new FractalError(ErrorCode.COMMAND_NOT_FOUND, `${cmd}: executable file not found in the container's PATH`);
}
