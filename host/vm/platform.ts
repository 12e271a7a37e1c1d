// The few choices that depend on the host's operating system (Linux, macOS),
// in one place. Pure functions of the platform, so the macOS ones are
// unit-tested on Linux (no Mac here to run them).
import os from "node:os";
import path from "node:path";

export type HostOs = "linux" | "darwin";

export function hostOs(platform: string = process.platform): HostOs {
  return platform === "darwin" ? "darwin" : "linux";
}

/** Where VMs keep their state: XDG's state directory, or macOS's Application Support. */
export function stateBase(platform: HostOs = hostOs(), home = os.homedir(), env: NodeJS.ProcessEnv = process.env): string {
  if (platform === "darwin") return path.join(home, "Library", "Application Support", "fractal");
  return path.join(env.XDG_STATE_HOME || path.join(home, ".local", "state"), "fractal");
}

/**
 * The host directory every boot shares at the same path: on macOS, /Users,
 * so a path a user types on the Mac works in the guest too (Docker Desktop
 * and Lima do the same). Linux shares nothing unless asked.
 */
export function implicitShare(platform: HostOs = hostOs()): { hostDir: string; tag: string; readonly: boolean; guestPath: string } | undefined {
  return platform === "darwin" ? { hostDir: "/Users", tag: "users", readonly: false, guestPath: "/Users" } : undefined;
}

/**
 * 9p's security model. Linux hosts run QEMU as root and pass owners and
 * modes through (a backmount of the host's root needs them); on macOS QEMU
 * runs as the user, who cannot chown, so owners and modes are kept in
 * extended attributes instead.
 */
export function ninePSecurity(platform: HostOs = hostOs()): string {
  return platform === "darwin" ? "mapped-xattr" : "passthrough";
}
