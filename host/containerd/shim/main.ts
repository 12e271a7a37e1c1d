// containerd-shim-fractal-v1: containerd's runtime v2 shim binary for
// runtime_type io.containerd.fractal.v1. containerd runs it as
//   containerd-shim-fractal-v1 -namespace NS -address ADDR -publish-binary BIN -id ID start
// (in the bundle directory) and as `... -bundle DIR delete` after a shim
// died. This file only parses that command line and calls shim.ts.
import { runDelete, runServe, runStart, type ShimFlags } from "./shim.js";

function parse(argv: string[]): { flags: ShimFlags; action: string } {
  const flags: ShimFlags = { namespace: "", address: "", publishBinary: "", id: "", bundle: "", config: "", debug: false };
  const names: Record<string, keyof ShimFlags> = {
    namespace: "namespace",
    address: "address",
    "publish-binary": "publishBinary",
    id: "id",
    bundle: "bundle",
    config: "config",
  };
  let action = "";
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("-")) {
      action = a;
      continue;
    }
    // Go's flag package: -name value, -name=value, --name; booleans take no value.
    const [rawName, inline] = a.replace(/^--?/, "").split(/=(.*)/s, 2) as [string, string | undefined];
    if (rawName === "debug" || rawName === "v") {
      if (rawName === "v") {
        process.stdout.write("containerd-shim-fractal-v1 (fractal)\n");
        process.exit(0);
      }
      flags.debug = inline !== "false";
      continue;
    }
    const key = names[rawName];
    const value = inline ?? argv[++i];
    if (!key || value === undefined) {
      process.stderr.write(`containerd-shim-fractal-v1: unknown or incomplete flag ${a}\n`);
      process.exit(2);
    }
    (flags[key] as string) = value;
  }
  return { flags, action };
}

const { flags, action } = parse(process.argv.slice(2));
const run = action === "start" ? runStart : action === "delete" ? runDelete : action === "serve" ? runServe : undefined;
if (!run) {
  process.stderr.write(`containerd-shim-fractal-v1: unknown action "${action}" (containerd runs it with start or delete)\n`);
  process.exit(2);
}
run(flags).then(
  (code) => {
    if (code !== undefined) process.exit(code);
  },
  (err: Error) => {
    process.stderr.write(`containerd-shim-fractal-v1 ${action}: ${err.message}\n`);
    process.exit(1);
  },
);
