import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parseCmdline } from "../../agent/boot/cmdline.js";
import { parseExec } from "../../host/cli/exec.js";
import { parseBoot, parseMem } from "../../host/cli/vm.js";
import { parseSize } from "../../host/cli/args.js";
import { agentForwards, kernelCmdline, qemuArgs } from "../../host/vm/qemu.js";
import { preferAgentImage, preferUnpacked } from "../../host/vm/kernel.js";
import { chainScript, ipxeScript } from "../../host/netboot/script.js";
import { buildSubdir, hostArch, qemuBinaryFor } from "../../host/vm/arch.js";
import { implicitShare, stateBase } from "../../host/vm/platform.js";
import { usableAccel } from "../../host/vm/qemu.js";
import { passtAvailable } from "../../host/vm/passt.js";
import { ANY_CID, formatEndpoint, parseEndpoint } from "../../proto/endpoint.js";
import { ErrorCode } from "../../proto/errors.js";

describe("endpoint URLs", () => {
  it("parses every transport and prints it back", () => {
    for (const url of ["tcp://127.0.0.1:5000", "unix:///run/a.sock", "ws://[::1]:80/x", "vsock://3:1024", "vsock://:1024", "hvsock:///tmp/v.sock:52", "serial:///dev/ttyS1", "virtio-serial://org.fractal.agent"]) {
      expect(formatEndpoint(parseEndpoint(url))).toBe(url);
    }
    expect(parseEndpoint("vsock://-1:7")).toEqual({ kind: "vsock", cid: ANY_CID, port: 7 });
  });

  it("names what is wrong with a bad URL", () => {
    for (const [url, why] of [
      ["tcp://host", /HOST:PORT/],
      ["tcp://h:99999", /out of range/],
      ["unix://rel.sock", /absolute path/],
      ["ftp://x:1", /unknown scheme "ftp"/],
      ["localhost:5000", /SCHEME:\/\/ADDRESS/],
      ["hvsock:///x.sock", /PORT/],
    ] as const) {
      expect(() => parseEndpoint(url)).toThrow(why);
      try {
        parseEndpoint(url);
      } catch (e) {
        expect((e as { code: number }).code).toBe(ErrorCode.INVALID_ARGUMENT);
      }
    }
  });
});

describe("kernel command line", () => {
  it("reads listeners, shares and the hostname, ignoring other words", () => {
    const c = parseCmdline('console=ttyS0 quiet fractal.listen=virtio-serial://org.fractal.agent,tcp://0.0.0.0:1024 fractal.listen=vsock://:1024 fractal.share=root:/host:ro fractal.share=img:/images:virtiofs fractal.hostname=vm1 init="/x y"');
    expect(c.listen).toEqual(["virtio-serial://org.fractal.agent", "tcp://0.0.0.0:1024", "vsock://:1024"]);
    expect(c.shares).toEqual([
      { tag: "root", path: "/host", fs: "9p", readonly: true },
      { tag: "img", path: "/images", fs: "virtiofs", readonly: false },
    ]);
    expect(c.hostname).toBe("vm1");
    expect(c.errors).toEqual([]);
  });

  it("reports bad settings without failing", () => {
    const c = parseCmdline("fractal.share=nopath fractal.bogus=1");
    expect(c.shares).toEqual([]);
    expect(c.errors.join("\n")).toMatch(/fractal.share=nopath/);
    expect(c.errors.join("\n")).toMatch(/unknown setting fractal.bogus/);
  });

  it("reads an MTU for every link, and refuses one no link can have", () => {
    expect(parseCmdline("fractal.mtu=65520").mtu).toBe(65520);
    for (const bad of ["0", "67", "65536", "9k", ""]) {
      const c = parseCmdline(`fractal.mtu=${bad}`);
      expect(c.mtu, bad).toBeUndefined();
      expect(c.errors.join("\n"), bad).toMatch(new RegExp(`fractal.mtu=${bad}: expected a number of bytes from 68 to 65535`));
    }
  });

  it("reads a static address with its prefix, gateway and link, and names what is wrong with a bad one", () => {
    expect(parseCmdline("fractal.ip=192.168.1.20/24,192.168.1.1").ip).toEqual({ iface: undefined, address: "192.168.1.20", prefix: 24, gateway: "192.168.1.1" });
    expect(parseCmdline("fractal.ip=eth1:10.0.0.2/8").ip).toEqual({ iface: "eth1", address: "10.0.0.2", prefix: 8, gateway: undefined });
    expect(parseCmdline("fractal.ip=fd00::5/64,fd00::1").ip).toEqual({ iface: undefined, address: "fd00::5", prefix: 64, gateway: "fd00::1" });
    for (const [bad, why] of [
      ["10.0.0.2", /expected \[IFACE:\]ADDR\/PREFIX/],
      ["10.0.0.300/24", /10\.0\.0\.300 is not an IP address/],
      ["10.0.0.2/33", /bad prefix \/33/],
      ["10.0.0.2/24,fd00::1", /gateway fd00::1 is not an IPv4 address/],
    ] as const) {
      const c = parseCmdline(`fractal.ip=${bad}`);
      expect(c.ip, bad).toBeUndefined();
      expect(c.errors.join("\n"), bad).toMatch(why);
      expect(c.errors.join("\n"), bad).toMatch(/using DHCP/);
    }
  });
});

describe("network boot", () => {
  it("writes an iPXE script that fetches the kernel and initramfs beside it, with the listeners and keys on the command line", () => {
    const s = ipxeScript({ listen: ["tcp://0.0.0.0:1024", "serial:///dev/ttyS1?baud=115200"], keys: ["fractal.key=AAAA"], append: ["fractal.ip=10.0.0.5/24"] });
    const lines = s.split("\n");
    expect(lines[0]).toBe("#!ipxe");
    expect(lines).toContain("initrd initramfs.cpio");
    expect(lines).toContain("boot");
    const kernel = lines.find((l) => l.startsWith("kernel "))!;
    expect(kernel).toBe("kernel vmlinuz initrd=initramfs.cpio console=ttyS0,115200 quiet panic=-1 fractal.listen=tcp://0.0.0.0:1024,serial:///dev/ttyS1?baud=115200 fractal.key=AAAA fractal.ip=10.0.0.5/24");
    // With no listener named: TCP, the one transport every networked machine has.
    expect(ipxeScript({ listen: [], keys: [], append: [] })).toMatch(/fractal\.listen=tcp:\/\/0\.0\.0\.0:1024\n/);
    expect(chainScript(8080)).toBe("#!ipxe\nchain http://${next-server}:8080/boot.ipxe || shell\n");
    expect(chainScript(8080, "http://10.1.1.1:80")).toMatch(/chain http:\/\/10\.1\.1\.1:80\/boot\.ipxe/);
  });
});

describe("CLI flags", () => {
  it("parses docker-style exec flags and stops at the command", () => {
    const c = parseExec(["-it", "-e", "A=1", "-eB=2", "--env=C", "-w", "/tmp", "-u", "1000:100", "--vm", "v", "--", "ls", "-l"], { C: "from-host", TERM: "vt100" });
    if (c === "help") throw new Error("unexpected help");
    expect(c.options.argv).toEqual(["ls", "-l"]);
    expect(c.options.env).toEqual({ A: "1", B: "2", C: "from-host" });
    expect(c.options.cwd).toBe("/tmp");
    expect(c.options.user).toEqual({ uid: 1000, gid: 100 });
    expect(c.options.tty?.term).toBe("vt100");
    expect(c.interactive).toBe(true);
    expect(c.vm).toBe("v");
  });

  it("parses boot flags, with sizes and shares checked", () => {
    const b = parseBoot(["--name", "x", "--mem", "2G", "--cpus", "4", "--share", "/tmp:t:ro", "--tcp", "5555", "-d"]);
    if (b === "help") throw new Error("unexpected help");
    expect(b.opts).toMatchObject({ name: "x", memMiB: 2048, cpus: 4, tcp: 5555, shares: [{ hostDir: "/tmp", tag: "t", readonly: true }] });
    expect(b.detach).toBe(true);
    expect(parseMem("512M")).toBe(512);
    expect(parseMem("1.5g")).toBe(1536);
    expect(parseMem(String(256 << 20))).toBe(256); // a bare number is bytes, as docker reads sizes
    expect(() => parseMem("64M")).toThrow(/too small/);
    expect(() => parseMem("1024")).toThrow(/--mem 1024 is too small: at least 128M/);
    expect(() => parseMem("lots")).toThrow(/bad --mem "lots"/);
    expect(parseSize("64m", "--memory", "run", 4 << 20, "4M")).toBe(64 << 20);
    expect(parseSize("64MiB", "--memory", "run", 4 << 20, "4M")).toBe(64 << 20);
    expect(parseSize("8388608", "--memory", "run", 4 << 20, "4M")).toBe(8 << 20);
    expect(() => parseBoot(["--share", "/tmp"])).toThrow(/HOSTDIR:TAG/);
    expect(() => parseBoot(["--tcp", "http"])).toThrow(/bad --tcp/);
    const attested = parseBoot(["--attest", "--expect", "m.json"]);
    expect(attested !== "help" && attested.opts.tpm && attested.attestExpect?.endsWith("/m.json")).toBe(true);
    const tpmOnly = parseBoot(["--tpm"]);
    // UEFI starts and measures the bzImage's EFI stub: a measured boot never takes the unpacked kernel.
    if (tpmOnly !== "help") expect(path.basename(tpmOnly.opts.kernel)).toBe("vmlinuz");
    expect(tpmOnly !== "help" && tpmOnly.opts.tpm && tpmOnly.attestExpect === undefined).toBe(true);
    expect(() => parseBoot(["--expect", "m.json"])).toThrow(/--expect goes with --attest/);
  });
});

describe("kernel choice", () => {
  it("takes the unpacked kernel beside a bzImage when the build made one, the bzImage otherwise", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-kernel-"));
    const bz = path.join(dir, "vmlinuz");
    fs.writeFileSync(bz, "bz");
    expect(preferUnpacked(bz)).toBe(bz);
    fs.writeFileSync(path.join(dir, "vmlinux"), "elf");
    expect(preferUnpacked(bz)).toBe(path.join(dir, "vmlinux"));
    fs.rmSync(dir, { recursive: true });
  });

  it("boots the archive without the agent and the agent's disk when the build has both, the self-contained archive otherwise", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-initrd-"));
    const whole = path.join(dir, "initramfs.cpio");
    fs.writeFileSync(whole, "cpio");
    expect(preferAgentImage(whole)).toEqual({ initrd: whole });
    fs.writeFileSync(path.join(dir, "initramfs-lite.cpio"), "cpio");
    expect(preferAgentImage(whole)).toEqual({ initrd: whole }); // half a pair is no pair
    fs.writeFileSync(path.join(dir, "agent.erofs"), "erofs");
    expect(preferAgentImage(whole)).toEqual({ initrd: path.join(dir, "initramfs-lite.cpio"), agentImage: path.join(dir, "agent.erofs") });
    fs.rmSync(dir, { recursive: true });
  });

  it("keeps a named initrd as it is, and measured boots self-contained", () => {
    const named = parseBoot(["--initrd", "/x/mine.cpio"]);
    expect(named !== "help" && named.opts.initrd).toBe("/x/mine.cpio");
    expect(named !== "help" && named.opts.agentImage).toBeUndefined();
    const measured = parseBoot(["--tpm"]);
    expect(measured !== "help" && path.basename(measured.opts.initrd)).toBe("initramfs.cpio");
    expect(measured !== "help" && measured.opts.agentImage).toBeUndefined();
  });
});

describe("QEMU command line", () => {
  const base = { name: "vm1", kernel: "/k", initrd: "/i", memMiB: 1024, cpus: 2, stateDir: "/s", shares: [], virtiofs: [] };

  it("uses TCG with -cpu max (less ERMS) when there is no KVM, and the agent's serial port always", () => {
    const a = qemuArgs({ ...base, accel: "tcg" }).join(" ");
    expect(a).toMatch(/-machine q35,accel=tcg -cpu max,erms=off /);
    expect(a).toMatch(/virtserialport,bus=vser0.0,chardev=agent,name=org.fractal.agent/);
    expect(a).toMatch(/socket,id=agent,path=\/s\/agent.sock,server=on,wait=off/);
    expect(a).not.toMatch(/vhost-vsock/);
    expect(a).not.toMatch(/-netdev/);
    expect(a).not.toMatch(/virtio-blk/);
  });

  it("attaches the agent's disk read-only, with the serial the guest finds it by", () => {
    const a = qemuArgs({ ...base, accel: "tcg", agentImage: "/b/agent,1.erofs" }).join(" ");
    expect(a).toContain("-drive file=/b/agent,,1.erofs,if=none,id=agent,format=raw,readonly=on -device virtio-blk-pci,drive=agent,serial=fractal-agent");
    expect(a).toContain("-m 1024 ");
  });

  it("maps a whole number of 2 MiB of the agent's image into an x86 guest as read-only virtio-pmem, with memory room for it", () => {
    const bytes = 55 * 2 * 1024 * 1024;
    const args = qemuArgs({ ...base, accel: "tcg", agentImage: "/b/agent,1.erofs", agentImageBytes: bytes, arch: "x86_64" });
    const a = args.join(" ");
    expect(a).toContain(`-object memory-backend-file,id=agentmem,mem-path=/b/agent,,1.erofs,size=${bytes},readonly=on,share=off,align=2097152 -device virtio-pmem-pci,memdev=agentmem,id=agentpmem`);
    expect(a).toContain("-m 1024M,slots=1,maxmem=1134M ");
    expect(args[args.indexOf("-append") + 1]!.split(" ")).toContain("swiotlb=1024");
    expect(a).not.toMatch(/virtio-blk/);
    // Any other size, an arm64 guest, or HVF: the virtio disk.
    for (const o of [{ agentImageBytes: bytes + 4096, arch: "x86_64" as const, accel: "tcg" as const }, { agentImageBytes: bytes, arch: "aarch64" as const, accel: "tcg" as const }, { agentImageBytes: bytes, arch: "x86_64" as const, accel: "hvf" as const }]) {
      const b = qemuArgs({ ...base, agentImage: "/b/a.erofs", ...o }).join(" ");
      expect(b).toContain("virtio-blk-pci,drive=agent,serial=fractal-agent");
      expect(b).not.toMatch(/pmem|maxmem|swiotlb/);
    }
  });

  it("gives the guest the NIC model asked for, virtio by default", () => {
    const nic = (o: object) => { const a = qemuArgs({ ...base, accel: "tcg", tcpPort: 4000, ...o }); return a[a.indexOf("-device", a.indexOf("-netdev")) + 1]; };
    expect(nic({})).toBe("virtio-net-pci,netdev=net0");
    expect(nic({ nic: "e1000" })).toBe("e1000,netdev=net0");
    expect(nic({ nic: "e1000e" })).toBe("e1000e,netdev=net0");
  });

  it("puts the NIC on passt's socket when there is one, with its large MTU for a virtio NIC only", () => {
    const at = (a: string[], flag: string) => a[a.indexOf(flag) + 1];
    const passt = qemuArgs({ ...base, accel: "tcg", tcpPort: 4000, forwards: [{ host: 4022, guest: 22 }], passtSocket: "/s/passt.sock" });
    expect(at(passt, "-netdev")).toBe("stream,id=net0,server=off,addr.type=unix,addr.path=/s/passt.sock");
    expect(at(passt, "-append")).toContain("fractal.mtu=65520");
    expect(at(qemuArgs({ ...base, accel: "tcg", tcpPort: 4000, nic: "e1000e", passtSocket: "/s/passt.sock" }), "-append")).not.toContain("fractal.mtu");
    const slirp = qemuArgs({ ...base, accel: "tcg", tcpPort: 4000, forwards: [{ host: 4022, guest: 22 }] });
    expect(at(slirp, "-netdev")).toBe("user,id=net0,hostfwd=tcp:127.0.0.1:4000-:1024,hostfwd=tcp:127.0.0.1:4022-:22");
    expect(at(slirp, "-append")).not.toContain("fractal.mtu");
    expect(agentForwards({ tcpPort: 4000, forwards: [{ host: 4022, guest: 22 }] })).toEqual([{ host: 4000, guest: 1024 }, { host: 4022, guest: 22 }]);
  });

  it("adds KVM, vsock, a forwarded TCP port and 9p shares when asked", () => {
    const args = qemuArgs({ ...base, accel: "kvm", tcpPort: 4000, vsockCid: 7, shares: [{ hostDir: "/data", tag: "d", readonly: true }] });
    const a = args.join(" ");
    expect(a).toMatch(/accel=kvm -cpu host/);
    expect(a).toMatch(/vhost-vsock-pci,guest-cid=7/);
    expect(a).toMatch(/hostfwd=tcp:127.0.0.1:4000-:1024/);
    expect(a).toMatch(/local,id=fs0,path=\/data,security_model=passthrough,multidevs=remap,readonly=on/);
    const append = args[args.indexOf("-append") + 1]!;
    expect(append).toMatch(/fractal.listen=virtio-serial:\/\/org.fractal.agent,tcp:\/\/0.0.0.0:1024,vsock:\/\/:1024/);
    expect(append).toMatch(/fractal.share=d:\/data:ro/);
    expect(a).not.toMatch(/pflash|tpm/);
  });

  it("boots through UEFI firmware with a TPM when asked, and keeps the kernel command line it measures", () => {
    const o = { ...base, accel: "tcg" as const, tpm: { socket: "/s/swtpm.sock", firmwareCode: "/fw/CODE.fd", firmwareVars: "/s/vars.fd" } };
    const args = qemuArgs(o);
    const a = args.join(" ");
    expect(a).toContain("-drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd -drive if=pflash,format=raw,unit=1,file=/s/vars.fd");
    expect(a).toContain("-chardev socket,id=tpmchr,path=/s/swtpm.sock -tpmdev emulator,id=tpm0,chardev=tpmchr -device tpm-crb,tpmdev=tpm0");
    // The direct kernel boot stays: OVMF loads -kernel and -initrd itself and measures them.
    expect(args[args.indexOf("-kernel") + 1]).toBe("/k");
    expect(args[args.indexOf("-append") + 1]).toBe(kernelCmdline(o));
  });
});

describe("arm64 guests and macOS hosts (fractal-mac)", () => {
  const base = { name: "m1", kernel: "/k", initrd: "/i", memMiB: 1024, cpus: 2, stateDir: "/s", shares: [], virtiofs: [] };
  const at = (a: string[], flag: string) => a[a.indexOf(flag) + 1];

  it("boots an arm64 guest on qemu-system-aarch64's virt board, with its PL011 console, under TCG on an x86 host", () => {
    const a = qemuArgs({ ...base, arch: "aarch64", accel: "tcg" });
    expect(at(a, "-machine")).toBe("virt,gic-version=3,accel=tcg");
    expect(at(a, "-cpu")).toBe("max,pauth-impdef=on");
    expect(at(a, "-append")).toMatch(/^console=ttyAMA0 /);
    expect(qemuBinaryFor("aarch64")).toBe("qemu-system-aarch64");
    // KVM and HVF cannot run another architecture's guest.
    if (hostArch() === "x86_64") expect(usableAccel(os.tmpdir(), "aarch64")).toBe("tcg");
    expect(hostArch("arm64")).toBe("aarch64");
    expect(hostArch("x64")).toBe("x86_64");
  });

  it("on a Mac: HVF with the host's CPU, /Users shared at /Users with owners kept in xattrs, state under Application Support", () => {
    const users = implicitShare("darwin")!;
    const a = qemuArgs({ ...base, arch: "aarch64", accel: "hvf", hostOs: "darwin", shares: [users] });
    expect(at(a, "-machine")).toBe("virt,gic-version=3,accel=hvf");
    expect(at(a, "-cpu")).toBe("host");
    expect(at(a, "-fsdev")).toBe("local,id=fs0,path=/Users,security_model=mapped-xattr,multidevs=remap");
    expect(at(a, "-append")).toMatch(/fractal\.share=users:\/Users( |$)/);
    expect(stateBase("darwin", "/Users/ann")).toBe("/Users/ann/Library/Application Support/fractal");
    expect(stateBase("linux", "/home/ann", {})).toBe("/home/ann/.local/state/fractal");
    expect(implicitShare("linux")).toBeUndefined();
    // An arm64 Mac's build/ is arm64's own; an x86 host keeps arm64's in build/arm64.
    expect(buildSubdir("aarch64", "aarch64")).toBe("");
    expect(buildSubdir("aarch64", "x86_64")).toBe("arm64");
  });

  it("parses boot --arch, with /Users added on macOS only, and refuses an architecture it does not build", () => {
    const mac = parseBoot(["--arch", "arm64"], "darwin");
    if (mac === "help") throw new Error("help");
    expect(mac.opts.arch).toBe("aarch64");
    expect(mac.opts.shares.map((s) => s.hostDir)).toContain("/Users");
    if (hostArch() === "x86_64") expect(mac.opts.kernel).toMatch(/\/arm64\/kernel\/vmlinuz$/);
    const linux = parseBoot(["--arch", "amd64"], "linux");
    if (linux === "help") throw new Error("help");
    expect(linux.opts.shares.map((s) => s.hostDir)).not.toContain("/Users");
    expect(() => parseBoot(["--arch", "sparc"])).toThrow(/bad --arch "sparc": expected x86_64 or aarch64/);
  });
});

describe("passt lookup", () => {
  it("finds passt by name on PATH or by path, and only as an executable file", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-passt-"));
    const exe = path.join(dir, "mypasst");
    const plain = path.join(dir, "notexec");
    fs.writeFileSync(exe, "#!/bin/sh\n", { mode: 0o755 });
    fs.writeFileSync(plain, "", { mode: 0o644 });
    const saved = { passt: process.env.FRACTAL_PASST, path: process.env.PATH };
    try {
      const found = (passt: string, pathVar: string) => {
        process.env.FRACTAL_PASST = passt;
        process.env.PATH = pathVar;
        return passtAvailable();
      };
      expect(found("mypasst", `/nonexistent:${dir}`)).toBe(true);
      expect(found("mypasst", "/nonexistent")).toBe(false);
      expect(found(exe, "")).toBe(true);
      expect(found(plain, "")).toBe(false);
      expect(found("notexec", dir)).toBe(false);
      expect(found(dir, "")).toBe(false); // a directory is not a program
    } finally {
      for (const [k, v] of [["FRACTAL_PASST", saved.passt], ["PATH", saved.path]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
