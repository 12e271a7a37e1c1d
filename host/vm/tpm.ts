// A VM's TPM: Debian's swtpm, its state kept in the VM's directory across
// boots (so the machine keeps its endorsement key, as hardware does), made
// at first boot by swtpm_setup with an EK certificate from a local CA that
// belongs to this host's fractal state. The EK certificate swtpm_setup wrote
// is the VM's pin: attestation accepts quotes only from that TPM.
import { spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { stopByPidFile } from "./pidfile.js";

/** The EK certificate file swtpm_setup writes for the RSA 2048 EK. */
const EK_CERT = "ek-rsa2048.crt";

export interface TpmPaths {
  /** swtpm's state and the EK certificate: kept across boots. */
  state: string;
  /** Its control socket, which QEMU's tpm-emulator connects to. */
  socket: string;
  pid: string;
  log: string;
}

function run(cmd: string, args: string[], what: string): void {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.error) throw new FractalError(ErrorCode.NOT_FOUND, `--tpm needs ${cmd} (${r.error.message}): install swtpm and swtpm-tools`);
  if (r.status !== 0) throw new FractalError(ErrorCode.INTERNAL, `${what} failed (exit ${r.status}): ${(r.stderr || r.stdout).trim().split("\n").slice(-5).join("\n")}`);
}

/** The host's local CA for VM TPMs: its files, made on first use by swtpm_localca. */
export function localCa(caDir: string): { setupConfig: string; certs: () => X509Certificate[] } {
  fs.mkdirSync(caDir, { recursive: true, mode: 0o700 });
  const conf = path.join(caDir, "swtpm-localca.conf");
  const setupConfig = path.join(caDir, "swtpm_setup.conf");
  const options = path.join(caDir, "swtpm-localca.options");
  if (!fs.existsSync(setupConfig)) {
    fs.writeFileSync(conf, [`statedir = ${caDir}`, `signingkey = ${caDir}/signkey.pem`, `issuercert = ${caDir}/issuercert.pem`, `certserial = ${caDir}/certserial`, ""].join("\n"));
    fs.writeFileSync(options, "--platform-manufacturer fractal\n--platform-model QEMU\n");
    fs.writeFileSync(setupConfig, ["create_certs_tool = swtpm_localca", `create_certs_tool_config = ${conf}`, `create_certs_tool_options = ${options}`, "active_pcr_banks = sha256", ""].join("\n"));
  }
  const certs = () =>
    ["issuercert.pem", "swtpm-localca-rootca-cert.pem"].flatMap((f) => {
      try {
        return [new X509Certificate(fs.readFileSync(path.join(caDir, f)))];
      } catch {
        return [];
      }
    });
  return { setupConfig, certs };
}

/** Makes the TPM's state (EK and its certificate) unless it exists. */
export function ensureTpmState(stateDir: string, caDir: string): void {
  if (fs.existsSync(path.join(stateDir, EK_CERT))) return;
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const { setupConfig } = localCa(caDir);
  run("swtpm_setup", ["--tpm2", "--tpm-state", stateDir, "--create-ek-cert", "--write-ek-cert-files", stateDir, "--config", setupConfig, "--pcr-banks", "sha256", "--overwrite"], "swtpm_setup");
}

/** Starts swtpm for QEMU; it ends when QEMU closes its control socket. */
export function startSwtpm(p: TpmPaths): void {
  fs.rmSync(p.socket, { force: true });
  run(
    "swtpm",
    ["socket", "--tpm2", "--tpmstate", `dir=${p.state}`, "--ctrl", `type=unixio,path=${p.socket}`, "--pid", `file=${p.pid}`, "--log", `file=${p.log},level=1`, "--terminate", "--daemon"],
    "swtpm",
  );
  if (!fs.existsSync(p.socket)) throw new FractalError(ErrorCode.INTERNAL, `swtpm started but made no socket at ${p.socket} (see ${p.log})`);
}

/** Ends a swtpm left behind (QEMU failed to start, or was killed before connecting). */
export function stopSwtpm(pidFile: string): void {
  stopByPidFile(pidFile, "swtpm");
}

/** The EK certificate made for this VM's TPM at its first boot, or undefined for a VM without one. */
export function pinnedEk(stateDir: string): X509Certificate | undefined {
  try {
    return new X509Certificate(fs.readFileSync(path.join(stateDir, EK_CERT)));
  } catch {
    return undefined;
  }
}
