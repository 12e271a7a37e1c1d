// Live layers (fractal-host layer add/rm): a running container's mount
// namespace changes under its processes. The agent is multithreaded and
// must not setns; this single-threaded helper does the namespace work.
//
// -dirs PID -- make:PATH | remove:PATH...: make:PATH makes PATH a directory
// of the container's own writable layer: missing components are made, an
// existing directory from a lower layer is copied up (a chmod to its own
// mode makes overlayfs copy it up), and a component that is a symlink or
// not a directory is refused, so the path the agent later names under the
// container's upper directory is the one the container sees. remove:PATH
// removes such a directory again if it is empty.
//
// -graft PID [-freeze CGROUP] -- OP...: with OP either `detach:PATH` (a
// mount at PATH in the container is detached lazily: files open through it
// keep working) or `PATH=SOURCE` (a clone of the guest's mount SOURCE is
// attached at PATH). Detaching a mount also takes the mounts below it (the
// container's volumes, crun's binds of /etc/hosts), so every mount below a
// detached PATH that is not itself a detach target is cloned first and put
// back after the new mounts; so is every mount below a fresh PATH, which the
// new mount would otherwise cover. The container's cgroup is frozen around the
// swap, so no process of the container ever sees the moment between the
// old mount leaving and the new one arriving (move_mount's
// MOVE_MOUNT_BENEATH, which would make the swap atomic, needs Linux 6.5).
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

type graftOp struct {
	path   string
	source string // "": detach only
}

func runDirs(pid int, ops []string) {
	ns, err := openNamespace(pid)
	if err != nil {
		fail(exitFailed, "%v", err)
	}
	if err := ns.enter(); err != nil {
		fail(exitFailed, "%v", err)
	}
	for _, op := range ops {
		if p, ok := strings.CutPrefix(op, "make:"); ok {
			err = makeUpperDir(p)
		} else if p, ok := strings.CutPrefix(op, "remove:"); ok {
			if err = unix.Rmdir(p); errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.ENOENT) {
				err = nil
			}
		} else {
			err = fmt.Errorf("dirs: %q is neither make:PATH nor remove:PATH", op)
		}
		if err != nil {
			fail(exitFailed, "%v", err)
		}
	}
}

func makeUpperDir(p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("%q is not a clean absolute path", p)
	}
	cur := "/"
	for _, c := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		cur = filepath.Join(cur, c)
		st, err := os.Lstat(cur)
		if errors.Is(err, os.ErrNotExist) {
			if err := os.Mkdir(cur, 0o755); err != nil {
				return fmt.Errorf("mkdir %s in the container: %w", cur, err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("%s in the container: %w", cur, err)
		}
		if st.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("%s is a symlink in the container: give the path it points to", cur)
		}
		if !st.IsDir() {
			return fmt.Errorf("%s is not a directory in the container", cur)
		}
	}
	st, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if err := unix.Chmod(p, uint32(st.Mode().Perm())|modeBits(st.Mode())); err != nil {
		return fmt.Errorf("copy up %s: %w", p, err)
	}
	return nil
}

// modeBits turns Go's setuid, setgid and sticky flags back into mode bits.
func modeBits(m os.FileMode) uint32 {
	var b uint32
	if m&os.ModeSetuid != 0 {
		b |= unix.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		b |= unix.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		b |= unix.S_ISVTX
	}
	return b
}

func runGraft(pid int, freezeDir string, args []string) {
	var ops []graftOp
	for _, a := range args {
		if p, ok := strings.CutPrefix(a, "detach:"); ok {
			ops = append(ops, graftOp{path: p})
			continue
		}
		p, src, ok := strings.Cut(a, "=")
		if !ok || !filepath.IsAbs(p) || !filepath.IsAbs(src) {
			fail(exitFailed, "graft: %q is neither detach:PATH nor PATH=SOURCE", a)
		}
		ops = append(ops, graftOp{path: p, source: src})
	}
	if err := graft(pid, freezeDir, ops); err != nil {
		fail(exitFailed, "%v", err)
	}
}

func graft(pid int, freezeDir string, ops []graftOp) error {
	// Whatever can fail is done before the container is frozen.
	attach := map[string]int{}
	var detach []string
	for _, op := range ops {
		if op.source == "" {
			detach = append(detach, op.path)
			continue
		}
		fd, err := unix.OpenTree(unix.AT_FDCWD, op.source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return fmt.Errorf("clone the mount at %s: %w", op.source, err)
		}
		attach[op.path] = fd
	}
	mounts, err := mountPoints(pid)
	if err != nil {
		return err
	}
	// A fresh seam covers what is mounted below it just as a detached one takes it along.
	carried := carriedMounts(mounts, append(append([]string(nil), detach...), keys(attach)...))
	var fr *freezer
	if freezeDir != "" {
		if fr, err = openFreezer(freezeDir); err != nil {
			return err
		}
	}
	ns, err := openNamespace(pid)
	if err != nil {
		return err
	}
	if err := ns.enter(); err != nil {
		return err
	}
	carriedFds := map[string]int{}
	for _, m := range carried {
		fd, err := unix.OpenTree(unix.AT_FDCWD, m, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
		if err != nil {
			return fmt.Errorf("keep the container's mount at %s: %w", m, err)
		}
		carriedFds[m] = fd
	}
	if fr != nil {
		if err := fr.freeze(); err != nil {
			return err
		}
		defer fr.thaw()
	}
	var errs []error
	for _, p := range outermost(detach) {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("detach %s: %w", p, err))
		}
	}
	for _, p := range byDepth(keys(attach)) {
		if err := unix.MoveMount(attach[p], "", unix.AT_FDCWD, p, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			errs = append(errs, fmt.Errorf("attach at %s: %w", p, err))
		}
	}
	for _, p := range byDepth(carried) {
		if err := unix.MoveMount(carriedFds[p], "", unix.AT_FDCWD, p, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			errs = append(errs, fmt.Errorf("put back the container's mount at %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// mountPoints lists the container's mount points as it sees them.
func mountPoints(pid int) ([]string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, fmt.Errorf("the container's mounts: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			out = append(out, unescapeOctal(fields[4]))
		}
	}
	return out, sc.Err()
}

// unescapeOctal undoes mountinfo's \NNN escapes (space, tab, newline, backslash).
func unescapeOctal(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// carriedMounts: the outermost mounts strictly below a changed path that
// are not changed themselves.
func carriedMounts(mounts, changed []string) []string {
	isDetached := map[string]bool{}
	for _, d := range changed {
		isDetached[d] = true
	}
	var below []string
	seen := map[string]bool{}
	for _, m := range mounts {
		if seen[m] || isDetached[m] {
			continue
		}
		for _, d := range changed {
			if under(m, d) {
				below = append(below, m)
				seen[m] = true
				break
			}
		}
	}
	return outermostOf(below, isDetached)
}

// outermost drops paths below another path of the list.
func outermost(ps []string) []string {
	return outermostOf(ps, nil)
}

// outermostOf drops paths below another path of the list, unless a path
// marked in stop lies between them (a detached mount in between means the
// inner one is not taken along by the outer one's clone).
func outermostOf(ps []string, stop map[string]bool) []string {
	var out []string
	for _, p := range byDepth(ps) {
		inner := false
		for _, q := range out {
			if under(p, q) && !stopBetween(p, q, stop) {
				inner = true
				break
			}
		}
		if !inner {
			out = append(out, p)
		}
	}
	return out
}

func stopBetween(p, q string, stop map[string]bool) bool {
	for d := filepath.Dir(p); d != q && d != "/" && d != "."; d = filepath.Dir(d) {
		if stop[d] {
			return true
		}
	}
	return false
}

func under(p, dir string) bool {
	return dir == "/" && p != "/" || strings.HasPrefix(p, dir+"/")
}

func byDepth(ps []string) []string {
	out := append([]string(nil), ps...)
	sort.SliceStable(out, func(i, j int) bool { return strings.Count(out[i], "/") < strings.Count(out[j], "/") })
	return out
}

func keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// containerNamespace is a container's mount namespace and root, opened from
// the guest's side before this thread moves in.
type containerNamespace struct {
	ns, root int
}

func openNamespace(pid int) (*containerNamespace, error) {
	ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("the container's mount namespace (pid %d): %w", pid, err)
	}
	root, err := unix.Open(fmt.Sprintf("/proc/%d/root", pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("the container's root (pid %d): %w", pid, err)
	}
	return &containerNamespace{ns: ns, root: root}, nil
}

// enter moves this (locked) thread into the namespace with the container's
// root as its own, so absolute symlinks resolve inside the container.
func (c *containerNamespace) enter() error {
	// setns(CLONE_NEWNS) refuses a thread that shares its fs_struct, as Go's
	// threads do.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare fs: %w", err)
	}
	if err := unix.Setns(c.ns, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("enter the container's mount namespace: %w", err)
	}
	if err := unix.Fchdir(c.root); err != nil {
		return err
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot into the container: %w", err)
	}
	return unix.Chdir("/")
}

// freezer is a cgroup v2 freezer, opened before entering the container
// (whose /sys/fs/cgroup shows only its own cgroup).
type freezer struct {
	dir           string
	state, events *os.File
}

func openFreezer(dir string) (*freezer, error) {
	state, err := os.OpenFile(filepath.Join(dir, "cgroup.freeze"), os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("the container's cgroup freezer: %w", err)
	}
	events, err := os.Open(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return nil, fmt.Errorf("the container's cgroup events: %w", err)
	}
	return &freezer{dir: dir, state: state, events: events}, nil
}

func (f *freezer) freeze() error {
	if _, err := f.state.WriteString("1"); err != nil {
		return fmt.Errorf("freeze %s: %w", f.dir, err)
	}
	buf := make([]byte, 512)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Microsecond) {
		n, _ := f.events.ReadAt(buf, 0)
		if strings.Contains(string(buf[:n]), "frozen 1") {
			return nil
		}
	}
	f.thaw()
	return fmt.Errorf("the container did not freeze within 5 s")
}

func (f *freezer) thaw() {
	if _, err := f.state.WriteString("0"); err != nil {
		fmt.Fprintf(os.Stderr, "fractal-ns: thaw %s: %v\n", f.dir, err)
	}
}
