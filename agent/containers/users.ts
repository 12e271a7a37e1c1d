// USER as docker reads it: "name", "uid", "name:group", "uid:gid", looked up
// in the container's own /etc/passwd and /etc/group (read through a
// contained path walk: a symlinked /etc/passwd cannot point at the guest's).
import { ContainedTree } from "../../oci/tree.js";
import { ErrorCode, FractalError } from "../../proto/errors.js";

export interface ResolvedUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  home: string;
}

function table(tree: ContainedTree, file: string): string[][] {
  return (tree.readFile(file) ?? "")
    .split("\n")
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => l.split(":"));
}

const isNum = (s: string) => /^\d+$/.test(s);

export function resolveUser(rootfs: string, spec: string): ResolvedUser {
  const tree = new ContainedTree(rootfs);
  const [user = "", group] = spec === "" ? ["0"] : spec.split(":");
  const passwd = table(tree, "etc/passwd");
  const groups = table(tree, "etc/group");
  const pw = passwd.find((p) => (isNum(user) ? p[2] === user : p[0] === user));
  if (!pw && !isNum(user)) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `user "${user}" is not in the image's /etc/passwd`);
  const uid = pw ? Number(pw[2]) : Number(user);
  let gid = pw ? Number(pw[3]) : 0;
  if (group !== undefined && group !== "") {
    const g = groups.find((x) => (isNum(group) ? x[2] === group : x[0] === group));
    if (!g && !isNum(group)) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `group "${group}" is not in the image's /etc/group`);
    gid = g ? Number(g[2]) : Number(group);
  }
  const name = pw?.[0];
  const additionalGids = name ? groups.filter((g) => (g[3] ?? "").split(",").includes(name)).map((g) => Number(g[2])) : [];
  return { uid, gid, additionalGids, home: pw?.[5] || "/" };
}
