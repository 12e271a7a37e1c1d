// proto/errors.ts writes fractal.proto's ErrorCode out (so the CLI starts
// without the generated module); it must stay the generated enum, name for
// name and number for number.
import { describe, expect, it } from "vitest";
import { fractal } from "../../proto/gen/fractal.js";
import { ErrorCode, codeName, exitStatusFor, FractalError } from "../../proto/errors.js";

describe("ErrorCode", () => {
  it("is fractal.proto's ErrorCode, every name and number", () => {
    const generated = Object.fromEntries(Object.entries(fractal.v1.ErrorCode).filter(([k]) => Number.isNaN(Number(k))));
    expect({ ...ErrorCode }).toEqual(generated);
  });

  it("names codes, and maps them to exit statuses", () => {
    expect(codeName(ErrorCode.ATTESTATION_FAILED)).toBe("ATTESTATION_FAILED");
    expect(codeName(99 as ErrorCode)).toBe("CODE_99");
    expect(exitStatusFor(new FractalError(ErrorCode.COMMAND_NOT_FOUND, "x"))).toBe(127);
    expect(exitStatusFor(new FractalError(ErrorCode.NOT_FOUND, "x"))).toBe(125);
  });
});
