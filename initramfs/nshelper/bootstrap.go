package main

// What the supervisor does once, before the agent's first start: load the
// kernel modules and, when the agent is not in the initramfs, mount the
// read-only disk it is on (initramfs/agent-image.sh). Modules load on a
// goroutine while the agent starts, which under emulation takes seconds of
// one CPU: the agent waits for them only when it needs them, by reading the
// pipe whose end is handed to it until EOF. Each line on the pipe is
// "LEVEL message" for the agent's log.

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	moduleOrder = "/lib/modules/fractal.order"
	// The disk's serial (QEMU's -device virtio-blk-pci,serial=): how the
	// guest tells the agent's disk from any other.
	agentDiskSerial = "fractal-agent"
	agentImageDir   = "/lib/fractal"
	// How long the disk may take to appear once its drivers are loaded.
	diskGrace         = 5 * time.Second
	agentReadaheadKiB = 4096
	// Where erofs's superblock starts; its magic opens it and its UUID is
	// 48 bytes in.
	erofsSuperblock = 1024
)

var (
	erofsMagic = []byte{0xe2, 0xe1, 0xf5, 0xe0}
	// agent-image.sh's fixed UUID, 66726163-7461-6c00-0000-000000000001.
	agentImageUUID = []byte{0x66, 0x72, 0x61, 0x63, 0x74, 0x61, 0x6c, 0x00, 0, 0, 0, 0, 0, 0, 0, 0x01}
)

// moduleLoad is the modules' progress: done closes when the last one is tried.
type moduleLoad struct {
	done chan struct{}
	// report is the agent's end of the pipe the loader writes its lines to.
	report *os.File
}

// startModules loads the modules of moduleOrder in turn on a goroutine.
// Without the file there is nothing to do: the agent loads what it finds.
func startModules() *moduleLoad {
	order, err := os.ReadFile(moduleOrder)
	if err != nil {
		return nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fractal-supervise: pipe: %v\n", err)
		return nil
	}
	m := &moduleLoad{done: make(chan struct{}), report: r}
	go func() {
		defer close(m.done)
		defer w.Close()
		out := bufio.NewWriter(w)
		defer out.Flush()
		loadOrder(order, filepath.Dir(moduleOrder), "kernel modules", " (beside the agent's start)", out)
	}()
	return m
}

// mountAgentImage makes `agent` (absent from the initramfs) a link into the
// agent's disk, mounted read-only. The disk's drivers come from the module
// loader, so this waits for the disk to appear, and after the last module
// for diskGrace at most.
func mountAgentImage(agent string, mods *moduleLoad) error {
	target := filepath.Join(agentImageDir, filepath.Base(agent))
	if _, err := os.Stat(target); err == nil {
		return os.Symlink(target, agent) // mounted by an earlier try whose link failed
	}
	var dev string
	var pmem bool
	var deadline time.Time
	for {
		dev, pmem = agentDevice()
		if dev != "" && hasFilesystem("erofs") {
			break
		}
		if deadline.IsZero() && (mods == nil || closed(mods.done)) {
			deadline = time.Now().Add(diskGrace)
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			if dev == "" {
				return fmt.Errorf("%s is not in the initramfs, no pmem device holds the agent's image and no disk has serial %q (boot the self-contained initramfs, or attach the agent image)", agent, agentDiskSerial)
			}
			return fmt.Errorf("the kernel has no erofs file system for the agent's disk %s", dev)
		}
		time.Sleep(5 * time.Millisecond)
	}
	node := "/dev/" + dev
	if err := ensureNode(dev); err != nil {
		return err
	}
	if err := os.MkdirAll(agentImageDir, 0o755); err != nil {
		return err
	}
	flags := uintptr(unix.MS_RDONLY | unix.MS_NODEV | unix.MS_NOSUID)
	opts := ""
	if pmem {
		// DAX: the agent's pages are mapped from the pmem region itself,
		// the host's page cache, not copied into the guest's.
		opts = "dax=always"
	}
	err := unix.Mount(node, agentImageDir, "erofs", flags, opts)
	if err == unix.EINVAL && opts != "" {
		err = unix.Mount(node, agentImageDir, "erofs", flags, "") // an erofs without DAX
	}
	if err != nil {
		return fmt.Errorf("mount %s (erofs) on %s: %v", node, agentImageDir, err)
	}
	if !pmem {
		// Faults in the agent's code read the disk a readahead window at a time,
		// each read a round trip through the emulated device: a few large ones
		// beat hundreds of the default 128 KiB.
		ra := filepath.Join("/sys/block", dev, "queue/read_ahead_kb")
		if err := os.WriteFile(ra, []byte(fmt.Sprint(agentReadaheadKiB)), 0); err != nil {
			fmt.Fprintf(os.Stderr, "fractal-supervise: %s: %v\n", ra, err)
		}
	}
	if _, err := os.Stat(target); err != nil {
		return fmt.Errorf("the agent's disk %s has no %s", dev, filepath.Base(agent))
	}
	return os.Symlink(target, agent)
}

// uptime is the guest's, as /proc/uptime has it: the boot's stages are logged against it.
func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// agentDevice names the block device the agent's image is on: a pmem
// device (QEMU's virtio-pmem) holding it, or else the virtio disk with the
// agent's serial. pmem says which. One scan of /sys/block: the supervisor
// polls this every few ms until the device appears.
func agentDevice() (dev string, pmem bool) {
	disks, _ := os.ReadDir("/sys/block")
	for _, d := range disks {
		name := d.Name()
		if strings.HasPrefix(name, "pmem") && holdsAgentImage(name) {
			return name, true
		}
		if b, err := os.ReadFile(filepath.Join("/sys/block", name, "serial")); err == nil && strings.TrimSpace(string(b)) == agentDiskSerial {
			dev = name
		}
	}
	return dev, false
}

// holdsAgentImage says whether block device `dev` holds the agent's erofs
// image: its superblock's magic and the fixed UUID agent-image.sh gives it
// (a pmem device has no serial to tell it by).
func holdsAgentImage(dev string) bool {
	if ensureNode(dev) != nil {
		return false
	}
	f, err := os.Open("/dev/" + dev)
	if err != nil {
		return false
	}
	defer f.Close()
	sb := make([]byte, 64)
	if _, err := f.ReadAt(sb, erofsSuperblock); err != nil {
		return false
	}
	return bytes.Equal(sb[0:4], erofsMagic) && bytes.Equal(sb[48:64], agentImageUUID)
}

// ensureNode makes /dev/DEV when no devtmpfs made it.
func ensureNode(dev string) error {
	if _, err := os.Stat("/dev/" + dev); err == nil {
		return nil
	}
	return mknodFromSys("/dev/"+dev, dev)
}

func hasFilesystem(name string) bool {
	b, _ := os.ReadFile("/proc/filesystems")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == name {
			return true
		}
	}
	return false
}

// mknodFromSys makes the device node when no devtmpfs made it.
func mknodFromSys(node, dev string) error {
	b, err := os.ReadFile(filepath.Join("/sys/block", dev, "dev"))
	if err != nil {
		return err
	}
	var major, minor uint32
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &major, &minor); err != nil {
		return fmt.Errorf("/sys/block/%s/dev: %v", dev, err)
	}
	return unix.Mknod(node, unix.S_IFBLK|0o600, int(unix.Mkdev(major, minor)))
}
