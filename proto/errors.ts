// Typed errors with stable codes. The code travels on the wire (ErrorCode in
// fractal.proto) and maps to a CLI exit status here, so callers and tests
// branch on codes, never on message text.
import { fractal } from "./gen/fractal.js";

export const ErrorCode = fractal.v1.ErrorCode;
export type ErrorCode = fractal.v1.ErrorCode;

/** An error with a stable code; what every fractal layer throws. */
export class FractalError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "FractalError";
  }
}

/** A broken protocol rule. `fatal` means the connection cannot continue. */
export class ProtocolViolation extends FractalError {
  constructor(
    code: ErrorCode,
    message: string,
    readonly fatal: boolean,
  ) {
    super(code, message);
    this.name = "ProtocolViolation";
  }
}

/** Name of a code, e.g. "NOT_FOUND", for messages and logs. */
export function codeName(code: ErrorCode): string {
  return ErrorCode[code] ?? `CODE_${code}`;
}

// Exit statuses follow docker's convention: 125 when fractal itself failed,
// 126 when the command could not be invoked, 127 when it was not found.
// Only a command that could not be found or run maps to 127/126: an image,
// container or VM that is not there is fractal's failure (125), so a script
// can tell "your program is missing" from "fractal could not do it".
const exitStatusByCode: Partial<Record<ErrorCode, number>> = {
  [ErrorCode.COMMAND_NOT_FOUND]: 127,
  [ErrorCode.COMMAND_NOT_EXECUTABLE]: 126,
};

/** The CLI exit status for an error that ended a command. */
export function exitStatusFor(err: unknown): number {
  if (err instanceof FractalError) return exitStatusByCode[err.code] ?? 125;
  return 125;
}

