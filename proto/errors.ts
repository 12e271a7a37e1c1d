// Typed errors with stable codes. The code travels on the wire (ErrorCode in
// fractal.proto) and maps to a CLI exit status here, so callers and tests
// branch on codes, never on message text.

/**
 * fractal.proto's ErrorCode, written out: every command imports this file,
 * and the CLI must start without loading the generated protobuf module
 * (test/unit/errors.test.ts keeps the two equal).
 */
export const ErrorCode = {
  ERROR_UNSPECIFIED: 0,
  MALFORMED_FRAME: 1,
  FRAME_TOO_LARGE: 2,
  UNKNOWN_MESSAGE: 3,
  STREAM_NOT_OPEN: 4,
  UNSUPPORTED_VERSION: 5,
  HANDSHAKE_REQUIRED: 6,
  FLOW_CONTROL: 7,
  NOT_FOUND: 8,
  PERMISSION_DENIED: 9,
  INVALID_ARGUMENT: 10,
  NO_SUCH_PROCESS: 11,
  INTERNAL: 12,
  UNAVAILABLE: 13,
  UNAUTHENTICATED: 14,
  COMMAND_NOT_FOUND: 15,
  COMMAND_NOT_EXECUTABLE: 16,
  IMAGE_NOT_FOUND: 17,
  CONTAINER_NOT_FOUND: 18,
  VM_NOT_FOUND: 19,
  ALREADY_EXISTS: 20,
  NOT_RUNNING: 21,
  RESOURCE_EXHAUSTED: 22,
  DEADLINE_EXCEEDED: 23,
  ATTESTATION_FAILED: 24,
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const names = new Map<number, string>(Object.entries(ErrorCode).map(([k, v]) => [v, k]));

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
  return names.get(code) ?? `CODE_${code}`;
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

