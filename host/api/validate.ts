// Request bodies checked against their schema before a handler sees them,
// so bad input is a 400 naming the field, never a half-done request. Covers
// the parts of OpenAPI's schema objects ./schemas.ts uses.
import { badRequest } from "./errors.js";
import { schemas } from "./schemas.js";

type Schema = Record<string, unknown>;

export function validateBody(name: string, value: unknown): void {
  check(schemas[name]!, value, "body");
}

function check(s: Schema, v: unknown, at: string): void {
  if (typeof s.$ref === "string") return check(schemas[s.$ref.split("/").pop()!]!, v, at);
  if (v === null && s.nullable) return;
  const fail = (why: string) => {
    throw badRequest(`${at}: ${why}`);
  };
  switch (s.type) {
    case "object": {
      if (typeof v !== "object" || v === null || Array.isArray(v)) fail("must be an object");
      const o = v as Record<string, unknown>;
      const props = (s.properties ?? {}) as Record<string, Schema>;
      for (const r of (s.required ?? []) as string[]) if (o[r] === undefined) fail(`${r} is required`);
      for (const [k, x] of Object.entries(o)) {
        const p = props[k] ?? (typeof s.additionalProperties === "object" ? (s.additionalProperties as Schema) : undefined);
        if (!p) {
          if (s.additionalProperties === false) fail(`unknown field "${k}"`);
          continue;
        }
        check(p, x, `${at}.${k}`);
      }
      return;
    }
    case "array":
      if (!Array.isArray(v)) fail("must be an array");
      if (typeof s.minItems === "number" && (v as unknown[]).length < s.minItems) fail(`needs at least ${s.minItems} item(s)`);
      (v as unknown[]).forEach((x, i) => check(s.items as Schema, x, `${at}[${i}]`));
      return;
    case "string":
      if (typeof v !== "string") fail("must be a string");
      if (typeof s.minLength === "number" && (v as string).length < s.minLength) fail("must not be empty");
      if (typeof s.pattern === "string" && !new RegExp(s.pattern).test(v as string)) fail(`"${v as string}" does not match ${s.pattern}`);
      if (Array.isArray(s.enum) && !s.enum.includes(v)) fail(`must be one of ${s.enum.join(", ")}`);
      return;
    case "integer":
    case "number":
      if (typeof v !== "number" || !Number.isFinite(v) || (s.type === "integer" && !Number.isInteger(v))) fail(`must be ${s.type === "integer" ? "an integer" : "a number"}`);
      if (typeof s.minimum === "number" && (v as number) < s.minimum) fail(`must be at least ${s.minimum}`);
      if (typeof s.maximum === "number" && (v as number) > s.maximum) fail(`must be at most ${s.maximum}`);
      return;
    case "boolean":
      if (typeof v !== "boolean") fail("must be true or false");
      return;
  }
}
