// The API's errors: a stable code (the protocol's ErrorCode name, so CLI,
// agent and API agree) and a message, with the HTTP status that fits.
import { ErrorCode, FractalError, codeName } from "../../proto/errors.js";

const STATUS: Partial<Record<ErrorCode, number>> = {
  [ErrorCode.INVALID_ARGUMENT]: 400,
  [ErrorCode.UNAUTHENTICATED]: 401,
  [ErrorCode.PERMISSION_DENIED]: 403,
  [ErrorCode.NOT_FOUND]: 404,
  [ErrorCode.IMAGE_NOT_FOUND]: 404,
  [ErrorCode.CONTAINER_NOT_FOUND]: 404,
  [ErrorCode.VM_NOT_FOUND]: 404,
  [ErrorCode.NO_SUCH_PROCESS]: 404,
  [ErrorCode.COMMAND_NOT_FOUND]: 404,
  [ErrorCode.ALREADY_EXISTS]: 409,
  [ErrorCode.NOT_RUNNING]: 409,
  [ErrorCode.COMMAND_NOT_EXECUTABLE]: 400,
  [ErrorCode.RESOURCE_EXHAUSTED]: 429,
  [ErrorCode.UNAVAILABLE]: 503,
  [ErrorCode.DEADLINE_EXCEEDED]: 504,
};

export interface ApiErrorBody {
  error: { code: string; message: string };
}

export function errorBody(err: FractalError): ApiErrorBody {
  return { error: { code: codeName(err.code), message: err.message } };
}

export function httpStatus(err: FractalError): number {
  return STATUS[err.code] ?? 500;
}

/** Anything thrown, as a FractalError (a bug is INTERNAL, its message kept). */
export function asApiError(err: unknown): FractalError {
  return err instanceof FractalError ? err : new FractalError(ErrorCode.INTERNAL, err instanceof Error ? err.message : String(err));
}

export const badRequest = (why: string) => new FractalError(ErrorCode.INVALID_ARGUMENT, why);
