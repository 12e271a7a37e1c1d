// What a machine that boots from the network is told: the iPXE script with
// the kernel command line (listeners, keys), and the stub a TFTP server hands
// out to reach it. Pure: settings in, text out.
import { AGENT_PORT } from "../../proto/guest.js";

/** Names the files have on the HTTP server, relative to the script's URL. */
export const NETBOOT_KERNEL = "vmlinuz";
export const NETBOOT_INITRD = "initramfs.cpio";
export const NETBOOT_SCRIPT = "boot.ipxe";

/**
 * A machine without virtio: TCP on every link (DHCP) and the console's UART
 * at a rate every serial console takes. The agent's serial listener and the
 * console must be different UARTs (kernel messages would cut into frames).
 */
export const NETBOOT_DEFAULT_LISTEN = [`tcp://0.0.0.0:${AGENT_PORT}`];

export interface NetbootSettings {
  /** fractal.listen URLs; default NETBOOT_DEFAULT_LISTEN. */
  listen: string[];
  /** fractal.key=… words (host/cli/keys.ts guestKeyArgs). */
  keys: string[];
  /** The machines' console; default ttyS0,115200. */
  console?: string;
  /** More kernel command line words. */
  append: string[];
}

export function netbootCmdline(s: NetbootSettings): string {
  const listen = s.listen.length > 0 ? s.listen : NETBOOT_DEFAULT_LISTEN;
  return [`console=${s.console ?? "ttyS0,115200"}`, "quiet", "panic=-1", `fractal.listen=${listen.join(",")}`, ...s.keys, ...s.append].join(" ");
}

/**
 * The script, with paths relative to its own URL (iPXE resolves them
 * against it): any HTTP server that serves the three files side by side
 * serves a rack. initrd= names the initramfs for the kernel's EFI stub,
 * which UEFI iPXE needs; BIOS iPXE ignores it.
 */
export function ipxeScript(s: NetbootSettings): string {
  return [
    "#!ipxe",
    "# fractal: kernel and initramfs over HTTP (written by fractal-host netboot-serve)",
    "echo fractal: fetching the kernel and initramfs",
    `kernel ${NETBOOT_KERNEL} initrd=${NETBOOT_INITRD} ${netbootCmdline(s)}`,
    `initrd ${NETBOOT_INITRD}`,
    "boot",
    "",
  ].join("\n");
}

/**
 * What a TFTP server hands out (DHCP's boot file name): a chain to the HTTP
 * server, which moves 100+ MB far faster than TFTP. `${next-server}` is the
 * DHCP answer's server address, where TFTP and HTTP usually share a host;
 * `base` overrides it (http://HOST:PORT).
 */
export function chainScript(port: number, base?: string): string {
  const url = `${base ?? `http://\${next-server}:${port}`}/${NETBOOT_SCRIPT}`;
  return `#!ipxe\nchain ${url} || shell\n`;
}
