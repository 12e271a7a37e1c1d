// The generated protobuf module, re-exported under short names. Generated
// types stop at this edge: code outside proto/ speaks the domain types of
// host/client.ts and agent/handlers, not these.
import { fractal } from "./gen/fractal.js";

export const pb = fractal.v1;
export type Frame = fractal.v1.Frame.$Properties;
export type Request = fractal.v1.Request.$Properties;
export type Response = fractal.v1.Response.$Properties;
export type Hello = fractal.v1.Hello.$Properties;
export type HelloAck = fractal.v1.HelloAck.$Properties;
export type ExecRequest = fractal.v1.ExecRequest.$Properties;
export type ExitStatus = fractal.v1.ExitStatus.$Properties;
export type RunRequest = fractal.v1.RunRequest.$Properties;
export type AttachRequest = fractal.v1.AttachRequest.$Properties;
export type ImageInfo = fractal.v1.ImageInfo.$Properties;
export type ContainerInfo = fractal.v1.ContainerInfo.$Properties;
export type ContainerExit = fractal.v1.ContainerExit.$Properties;
export type LayerInfo = fractal.v1.LayerInfo.$Properties;
export type VersionResponse = fractal.v1.VersionResponse.$Properties;

/** The protocol version this build speaks; Hello ranges are checked against it. */
export const PROTOCOL_VERSION = 1;
/** The oldest version this build still accepts. */
export const MIN_PROTOCOL_VERSION = 1;
