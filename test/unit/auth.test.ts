// Key files, command-line keys and the failed-attempt limit, without an agent.
import crypto from "node:crypto";
import { describe, expect, it } from "vitest";
import { parsePublicKeyBlob, signerFromPem } from "../../proto/auth.js";
import { generateKey, verifySignature } from "../../proto/ed25519.js";
import { AuthGate, FAILURE_WINDOW_MS, MAX_FAILURES } from "../../agent/auth/authenticator.js";
import { parseAuthorizedKeys, parseCmdlineKey } from "../../proto/authorized-keys.js";
import { checkAllowed } from "../../agent/auth/policy.js";
import { parseCmdline } from "../../agent/boot/cmdline.js";

const pair = async () => {
  const k = generateKey("t");
  return { signer: await signerFromPem(k.privatePem, "t"), line: k.publicLine };
};

describe("authorized keys", () => {
  it("reads keys with and without allow= lists, skipping comments", async () => {
    const a = await pair();
    const b = await pair();
    const keys = parseAuthorizedKeys(`# ours\n${a.line}\n\nallow=observer,exec ${b.line.replace(" t", " watcher")}\n`, "ak");
    expect(keys.map((k) => k.name)).toEqual(["t", "watcher"]);
    expect(keys[0]!.allowed).toEqual(["all"]);
    expect(keys[1]!.allowed).toEqual(expect.arrayContaining(["ping", "container_list", "logs", "exec"]));
    expect(keys[1]!.allowed).not.toContain("run");
    // Every request type can be granted, the newer ones too.
    const c = await pair();
    const tools = parseAuthorizedKeys(`allow=copy,port_forward,layer_add,layer_remove,layer_list ${c.line}`, "ak");
    expect(tools[0]!.allowed).toEqual(["copy", "port_forward", "layer_add", "layer_remove", "layer_list"]);
  });

  it("names the file, line and problem of a bad entry", async () => {
    const a = await pair();
    expect(() => parseAuthorizedKeys(`${a.line}\nssh-rsa AAAAB3NzaC1yc2E x`, "ak")).toThrow(/ak:2: expected "\[allow=TYPES\] ssh-ed25519/);
    expect(() => parseAuthorizedKeys(`allow=observer,format_disk ${a.line}`, "ak")).toThrow(/ak:1: unknown request type "format_disk"/);
    expect(() => parseAuthorizedKeys("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ==", "ak")).toThrow(/ak:1: not an ssh-ed25519 key/);
    expect(() => parseAuthorizedKeys("ssh-ed25519 !!!", "ak")).toThrow(/ak:1: the key is not base64/);
  });

  it("takes keys from the kernel command line, and reports bad ones without failing boot", async () => {
    const a = await pair();
    const blob = a.line.split(" ")[1]!;
    const cfg = parseCmdline(`console=ttyS0 fractal.key=${blob} fractal.key=observer:${blob} fractal.key=junk fractal.auth=all`);
    expect(cfg.keys.length).toBe(2);
    expect(Buffer.from(cfg.keys[0]!.key).equals(Buffer.from(a.signer.publicKey))).toBe(true);
    expect(cfg.keys[1]!.allowed).toContain("logs");
    expect(cfg.auth).toBe("all");
    expect(cfg.errors.join("\n")).toMatch(/fractal.key: the key is not base64|fractal.key: not an ssh-ed25519 key/);
    expect(() => parseCmdlineKey(`exec:${blob}`)).not.toThrow();
    expect(Buffer.from(parsePublicKeyBlob(blob, "x")).length).toBe(32);
  });
});

describe("key files", () => {
  it("signs with a key openssl-style PKCS#8 PEM holds, and names what is wrong with other files", async () => {
    // A key node:crypto made, signed through WebCrypto and checked through node:crypto again.
    const pem = crypto.generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }).toString();
    const s = await signerFromPem(pem, "k");
    const raw = crypto.createPublicKey(pem).export({ format: "der", type: "spki" });
    expect(Buffer.from(s.publicKey).equals(raw.subarray(raw.length - 32))).toBe(true);
    const challenge = new Uint8Array(32).fill(3);
    expect(verifySignature(s.publicKey, await s.sign(challenge), challenge)).toBe(true);
    expect(verifySignature(s.publicKey, await s.sign(challenge), new Uint8Array(32))).toBe(false);

    const rsa = crypto.generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey.export({ format: "pem", type: "pkcs8" }).toString();
    await expect(signerFromPem(rsa, "id_rsa")).rejects.toThrow(/^id_rsa: a rsa key; fractal keys are Ed25519/);
    const ec = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "pem", type: "pkcs8" }).toString();
    await expect(signerFromPem(ec, "k")).rejects.toThrow(/a ec key; fractal keys are Ed25519/);
    await expect(signerFromPem("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n-----END OPENSSH PRIVATE KEY-----\n", "id_ed25519")).rejects.toThrow(/id_ed25519: an OpenSSH-format key; fractal reads PKCS#8/);
    await expect(signerFromPem("ssh-ed25519 AAAA x\n", "key.pub")).rejects.toThrow(/key.pub: not a private key \(no PEM block\)/);
    await expect(signerFromPem("-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n", "k")).rejects.toThrow(/k: not a private key \(malformed PKCS#8\)/);
    // Ed25519's algorithm but a truncated key: WebCrypto's refusal, named.
    const short = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ""), "base64").subarray(0, 40);
    await expect(signerFromPem(`-----BEGIN PRIVATE KEY-----\n${short.toString("base64")}\n-----END PRIVATE KEY-----\n`, "k")).rejects.toThrow(/k: not a private key/);
  });
});

describe("auth gate", () => {
  it("asks only network connections for a key unless told otherwise", () => {
    const g = new AuthGate("network", []);
    expect(g.forConnection("tcp", "1.2.3.4", "t")).toBeDefined();
    expect(g.forConnection("wss", "1.2.3.4", "t")).toBeDefined();
    expect(g.forConnection("unix", "", "u")).toBeUndefined();
    expect(g.forConnection("virtio-serial", "", "s")).toBeUndefined();
    // Any local account can open AF_VSOCK to a guest: vsock is not the owner's alone.
    expect(g.forConnection("vsock", "", "v")).toBeDefined();
    expect(new AuthGate("all", []).forConnection("serial", "", "u")).toBeDefined();
    expect(new AuthGate("none", []).forConnection("tcp", "1.2.3.4", "t")).toBeUndefined();
  });

  it("locks a key out of an address after repeated failures, lets other keys and addresses in, and forgives after the window", async () => {
    const good = await pair();
    const bad = await pair();
    let now = 1_000_000;
    const g = new AuthGate("network", parseAuthorizedKeys(good.line, "ak"), () => now);
    const challenge = new Uint8Array(32).fill(7);
    const signed = new Map([[good, await good.signer.sign(challenge)], [bad, await bad.signer.sign(challenge)]]);
    const attempt = (who: typeof good, peer: string) => g.forConnection("tcp", peer, peer)!.verify(who.signer.publicKey, signed.get(who)!, challenge);
    for (let i = 0; i < MAX_FAILURES; i++) expect(() => attempt(bad, "10.0.0.9")).toThrow(/is not authorised/);
    expect(() => attempt(bad, "10.0.0.9")).toThrow(/too many failed attempts with key SHA256:\S+ from 10\.0\.0\.9; try again in 60 s/);
    // Behind QEMU's user-net every host client is 10.0.2.2: a good key from there still gets in.
    expect(attempt(good, "10.0.0.9").name).toBe("t");
    expect(() => attempt(bad, "10.0.0.10")).toThrow(/is not authorised/);
    now += FAILURE_WINDOW_MS + 1;
    expect(() => attempt(bad, "10.0.0.9")).toThrow(/is not authorised/);
  });

  it("refuses a signature over another challenge, and malformed keys", async () => {
    const good = await pair();
    const g = new AuthGate("network", parseAuthorizedKeys(good.line, "ak"));
    const a = g.forConnection("tcp", "p", "p")!;
    const c1 = new Uint8Array(32).fill(1);
    const c2 = new Uint8Array(32).fill(2);
    const sig = await good.signer.sign(c1);
    expect(() => a.verify(good.signer.publicKey, sig, c2)).toThrow(/bad signature/);
    expect(() => a.verify(new Uint8Array(5), new Uint8Array(64), c1)).toThrow(/malformed key \(5 bytes\)/);
  });

  it("keeps checking every signature once a key has been proven (its parsed form is kept)", async () => {
    const good = await pair();
    const other = await pair();
    const c = new Uint8Array(32).fill(7);
    const sig = await good.signer.sign(c);
    expect(verifySignature(good.signer.publicKey, sig, c)).toBe(true);
    // The same key again: a wrong challenge, a flipped bit, another key's signature.
    expect(verifySignature(good.signer.publicKey, sig, new Uint8Array(32))).toBe(false);
    const flipped = Uint8Array.from(sig);
    flipped[10]! ^= 1;
    expect(verifySignature(good.signer.publicKey, flipped, c)).toBe(false);
    expect(verifySignature(good.signer.publicKey, await other.signer.sign(c), c)).toBe(false);
    expect(verifySignature(good.signer.publicKey, sig, c)).toBe(true);
  });
});

describe("policy", () => {
  it("allows what a key lists and explains what it refuses", () => {
    const p = { name: "watch", allowed: ["ping", "attach"] };
    expect(() => checkAllowed(p, "ping")).not.toThrow();
    expect(() => checkAllowed(p, "logs")).not.toThrow();
    expect(() => checkAllowed(p, "exec")).toThrow(/permission denied: key "watch" may not send exec requests \(allowed: ping, attach\)/);
    expect(() => checkAllowed(undefined, "exec")).not.toThrow();
    expect(() => checkAllowed({ name: "root", allowed: ["all"] }, "shutdown")).not.toThrow();
  });
});
