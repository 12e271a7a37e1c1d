// Image errors carry a kind the agent and the CLI map to their own codes.
import { ErrorCode, FractalError } from "../proto/errors.js";

export type ImageErrorKind = "not-found" | "invalid" | "corrupt" | "unsupported";

export class ImageError extends Error {
  constructor(
    readonly kind: ImageErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "ImageError";
  }
}

/** An ImageError as the wire error the agent sends and the CLI maps to an exit status. */
export function asFractalError(err: unknown): unknown {
  if (!(err instanceof ImageError)) return err;
  return new FractalError(err.kind === "not-found" ? ErrorCode.IMAGE_NOT_FOUND : ErrorCode.INVALID_ARGUMENT, err.message);
}
