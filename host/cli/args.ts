// A small docker-style flag parser: short flags combine (-it), values follow
// as the next word or after '=' (--env=K=V, -eK=V), and parsing stops at the
// first positional word or at '--', so `exec -- ls -l` keeps `-l` for ls.
import { ErrorCode, FractalError } from "../../proto/errors.js";

export interface FlagSpec {
  long: string;
  short?: string;
  value?: boolean;
  repeat?: boolean;
  /** The value is optional and can only follow '=' (--namespace or --namespace=SPEC). */
  optionalValue?: boolean;
}

/** The value of an optionalValue flag given without '='. */
export const BARE = "\u0000bare";

export interface Parsed {
  flags: Map<string, string[]>;
  rest: string[];
  /** Parsing stopped at '--' (rest is what followed it). */
  dashdash: boolean;
}

export function parseFlags(args: string[], specs: FlagSpec[], command: string): Parsed {
  const flags = new Map<string, string[]>();
  const byLong = new Map(specs.map((s) => [s.long, s]));
  const byShort = new Map(specs.filter((s) => s.short).map((s) => [s.short!, s])); // filtered on short
  const set = (spec: FlagSpec, v: string) => {
    const prev = flags.get(spec.long);
    if (prev && !spec.repeat && spec.value) throw usageError(command, `--${spec.long} given twice`);
    flags.set(spec.long, [...(prev ?? []), v]);
  };
  let i = 0;
  let dashdash = false;
  for (; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") {
      i++;
      dashdash = true;
      break;
    }
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = a.slice(2, eq < 0 ? undefined : eq);
      const spec = byLong.get(name);
      if (!spec) throw usageError(command, `unknown flag --${name}`);
      if (spec.optionalValue) {
        flags.set(spec.long, [eq >= 0 ? a.slice(eq + 1) : BARE]);
      } else if (!spec.value) {
        if (eq >= 0) throw usageError(command, `--${name} takes no value`);
        set(spec, "true");
      } else if (eq >= 0) {
        set(spec, a.slice(eq + 1));
      } else {
        if (i + 1 >= args.length) throw usageError(command, `--${name} needs a value`);
        set(spec, args[++i]!);
      }
      continue;
    }
    if (a.startsWith("-") && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const spec = byShort.get(a[j]!);
        if (!spec) throw usageError(command, `unknown flag -${a[j]}`);
        if (!spec.value) {
          set(spec, "true");
          continue;
        }
        const inline = a.slice(j + 1);
        if (inline !== "") set(spec, inline.startsWith("=") ? inline.slice(1) : inline);
        else if (i + 1 < args.length) set(spec, args[++i]!);
        else throw usageError(command, `-${a[j]} needs a value`);
        break;
      }
      continue;
    }
    break;
  }
  return { flags, rest: args.slice(i), dashdash };
}

export function usageError(command: string, why: string): FractalError {
  return new FractalError(ErrorCode.INVALID_ARGUMENT, `${command}: ${why} (see --help)`);
}

export function flag(p: Parsed, name: string): boolean {
  return p.flags.has(name);
}

export function value(p: Parsed, name: string): string | undefined {
  return p.flags.get(name)?.at(-1);
}

export function values(p: Parsed, name: string): string[] {
  return p.flags.get(name) ?? [];
}

/**
 * A size as docker reads one (go-units RAMInBytes): a number, possibly
 * fractional, with an optional binary unit b, k, m, g or t (any case,
 * optionally followed by "b" or "ib"); a bare number is bytes. `min` is
 * the smallest the flag accepts, named in the error with `minText`.
 */
export function parseSize(s: string, flag: string, command: string, min: number, minText: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?$/i.exec(s.trim());
  if (!m) throw usageError(command, `bad ${flag} "${s}": expected a size such as 64M, 1.5G or 1073741824 (bytes)`);
  const unit = { "": 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase()]!; // the regex allows only these
  const n = Math.floor(Number(m[1]) * unit);
  if (n < min) throw usageError(command, `${flag} ${s} is too small: at least ${minText}`);
  return n;
}

/** docker's -e: K=V sets, a bare K copies the variable from this environment (if set). */
export function envFlags(kvs: string[], localEnv: NodeJS.ProcessEnv, command: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const kv of kvs) {
    const eq = kv.indexOf("=");
    const key = eq < 0 ? kv : kv.slice(0, eq);
    if (key === "") throw usageError(command, `bad --env "${kv}": expected K=V`);
    if (eq >= 0) env[key] = kv.slice(eq + 1);
    else if (localEnv[key] !== undefined) env[key] = localEnv[key]!; // checked just before
  }
  return env;
}
