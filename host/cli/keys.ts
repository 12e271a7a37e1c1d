// `fractal-host keygen`, and the kernel command-line words with which boot
// authorises keys in its guest.
import fs from "node:fs";
import { publicKeyBlob } from "../../proto/auth.js";
import { cmdlineKey, parseAuthorizedKeys } from "../../proto/authorized-keys.js";
import { ensureKey, writeNewKey } from "../keygen.js";
import { defaultKeyPath, loadSigner } from "../keys.js";
import { flag, parseFlags, usageError, value } from "./args.js";

export const keygenHelp = `usage: fractal-host keygen [-f FILE]

Makes an Ed25519 key pair for connecting to agents: FILE (private, mode 600)
and FILE.pub (one line, "ssh-ed25519 BASE64 user@host", to authorise in an
agent's authorized_keys or an initramfs build's AUTHORIZED_KEYS).

  -f, --file FILE   where to write (default: $FRACTAL_KEY or ~/.config/fractal/key)
`;

/** `keyFile`: --key or $FRACTAL_KEY, if given. */
export function runKeygen(args: string[], keyFile?: string): number {
  const p = parseFlags(args, [{ long: "file", short: "f", value: true }, { long: "help", short: "h" }], "keygen");
  if (flag(p, "help")) return void process.stdout.write(keygenHelp), 0;
  if (p.rest.length > 0) throw usageError("keygen", `unexpected argument "${p.rest[0]}"`);
  const file = value(p, "file") ?? keyFile ?? defaultKeyPath();
  const line = writeNewKey(file);
  process.stdout.write(`wrote ${file} and ${file}.pub\n${line}\n`);
  return 0;
}

/**
 * fractal.key= words for a guest: the user's own key (made on first use, as
 * docker-machine does, so `boot` then `exec` just works), and every line of
 * the --authorize files with its allow= list.
 */
export async function guestKeyArgs(authorizeFiles: string[], keyFile?: string): Promise<string[]> {
  let signer = await loadSigner(keyFile);
  if (!signer) {
    const file = defaultKeyPath();
    // Two first boots at once both find no key: one makes it, both use it.
    if (ensureKey(file)) process.stderr.write(`made a key for connecting to VMs: ${file}\n`);
    signer = (await loadSigner(file))!; // there now, whole
  }
  const args = [`fractal.key=${publicKeyBlob(signer.publicKey)}`];
  for (const f of authorizeFiles) {
    let text: string;
    try {
      text = fs.readFileSync(f, "utf8");
    } catch (err) {
      throw usageError("boot", `--authorize ${f}: ${(err as Error).message}`);
    }
    // Parsed here as the agent will parse it, so a bad line fails the boot, not the login.
    for (const k of parseAuthorizedKeys(text, f)) args.push(`fractal.key=${cmdlineKey(k)}`);
  }
  return args;
}
