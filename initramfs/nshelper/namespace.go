// The helper's two exec modes.
//
// -root/-bind: one command in a private mount namespace whose root is built
// from the host's backmount, the way u-root's cpu does with its -namespace
// flag (exec --namespace). The new root is a tmpfs holding, for each entry,
// REMOTE (a path on the host, found under -root) bind-mounted at LOCAL; a
// symlink on the host (as /lib -> usr/lib on merged-/usr systems) is
// recreated as the same symlink. The guest's own /proc, /sys and /dev are
// bound in, and /tmp is a private tmpfs, so two commands never see each
// other's temporary files.
//
// -pivotable serves the OCI runtime instead: pivot_root(2) refuses to move
// the initramfs root (rootfs has no parent mount), so crun run from the
// guest's root fails with EINVAL. In a private namespace the whole tree is
// bind-mounted and moved over /, and chroot makes that copy the root: a
// mount with a parent, which crun can pivot away from. Everything else
// (/run, cgroups, the containers' rootfs mounts) is the same tree, shared.
// The shim uses movedRoot the same way.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// runInNamespace builds the namespace from the -bind entries, changes to
// cwd inside it (or / when cwd is not there) and execs argv.
func runInNamespace(root string, bs binds, cwd string, argv []string) {
	if err := build(root, bs); err != nil {
		fail(exitFailed, "%v", err)
	}
	dir := cwd
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		dir = "/"
	}
	if err := os.Chdir(dir); err != nil {
		fail(exitFailed, "chdir %s: %v", dir, err)
	}
	execCommand(argv)
}

// runPivotable execs argv from a bind of the whole tree moved over /.
func runPivotable(argv []string) {
	if err := movedRoot(); err != nil {
		fail(exitFailed, "%v", err)
	}
	execCommand(argv)
}

// execCommand replaces this process with argv, failing as a shell would.
func execCommand(argv []string) {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fail(exitNotFound, "%s: command not found in the namespace (PATH=%s)", argv[0], os.Getenv("PATH"))
	}
	err = syscall.Exec(path, argv, os.Environ())
	if errors.Is(err, syscall.EACCES) {
		fail(exitNotExecutable, "%s: permission denied", argv[0])
	}
	fail(exitFailed, "exec %s: %v", path, err)
}

// privateNamespace enters a new mount namespace from which nothing
// propagates back to the guest's, and returns the mount point both modes
// build their root on: each namespace mounts there privately, so nothing is
// left behind in the guest's /run.
func privateNamespace() (string, error) {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return "", fmt.Errorf("unshare: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return "", fmt.Errorf("make / private: %w", err)
	}
	nr := "/run/fractal-ns"
	return nr, os.MkdirAll(nr, 0o755)
}

func build(root string, bs binds) error {
	nr, err := privateNamespace()
	if err != nil {
		return err
	}
	if err := unix.Mount("nsroot", nr, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount new root: %w", err)
	}
	// The guest's own kernel interfaces and a private /tmp come first, so
	// an entry below /tmp (or an explicit /tmp) is bound over them.
	for _, d := range []string{"/proc", "/sys", "/dev"} {
		if err := bindDir(d, filepath.Join(nr, d)); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(nr, "tmp"), 0o1777); err != nil {
		return err
	}
	if err := unix.Mount("tmp", filepath.Join(nr, "tmp"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return fmt.Errorf("mount private /tmp: %w", err)
	}
	for _, b := range bs {
		local, remote, ok := strings.Cut(b, "=")
		if !ok {
			local, remote = b, b
		}
		if !filepath.IsAbs(local) || !filepath.IsAbs(remote) {
			return fmt.Errorf("namespace entry %q: paths must be absolute", b)
		}
		if err := bindHost(nr, filepath.Join(root, remote), local, remote); err != nil {
			return err
		}
	}
	// chroot, not pivot_root: pivot_root refuses an initramfs root (EINVAL),
	// and the private mount namespace already confines what we mounted.
	if err := unix.Chroot(nr); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return os.Chdir("/")
}

// movedRoot makes a bind of the whole tree the root of a private namespace.
func movedRoot() error {
	wd, _ := os.Getwd()
	nr, err := privateNamespace()
	if err != nil {
		return err
	}
	if err := unix.Mount("/", nr, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind / on %s: %w", nr, err)
	}
	if err := unix.Chdir(nr); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if wd == "" {
		wd = "/"
	}
	return os.Chdir(wd)
}

func bindHost(nr, src, local, remote string) error {
	st, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("namespace entry %s: %s does not exist on the host", local, remote)
	}
	dst := filepath.Join(nr, local)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if st.Mode()&os.ModeSymlink != 0 {
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	}
	if st.IsDir() {
		return bindDir(src, dst)
	}
	if err := os.WriteFile(dst, nil, 0o644); err != nil {
		return err
	}
	return unix.Mount(src, dst, "", unix.MS_BIND, "")
}

func bindDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, dst, err)
	}
	return nil
}
