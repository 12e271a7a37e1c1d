package main

// Loading kernel modules from an order file (initramfs/modules.ts writes
// them, dependencies first): for the supervisor's goroutine at boot
// (bootstrap.go), and as -modules ORDER for the agent's later ones.

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// runModules (-modules ORDER): the agent's later modules (NIC drivers), loaded
// in this process so that the agent's event loop, which finit_module would
// hold for about 30 ms a module under emulation, answers its first hosts
// meanwhile. Reports on stdout as the supervisor's loader does on its pipe.
func runModules(orderFile, what string) {
	order, err := os.ReadFile(orderFile)
	if err != nil {
		fail(exitFailed, "%v", err)
	}
	out := bufio.NewWriter(os.Stdout)
	loadOrder(order, filepath.Dir(orderFile), what, "", out)
	if err := out.Flush(); err != nil {
		fail(exitFailed, "%v", err)
	}
	os.Exit(0)
}

// loadOrder loads the modules an order file lists, in turn, writing a
// "LEVEL message" line for each failure and a summary.
func loadOrder(order []byte, dir, what, note string, out io.Writer) {
	start := time.Now()
	loaded, total := 0, 0
	for _, rel := range strings.Fields(string(order)) {
		total++
		switch err := loadModule(filepath.Join(dir, rel)); err {
		case nil:
			loaded++
		case unix.EEXIST:
			// built in or loaded already: nothing to do
		default:
			fmt.Fprintf(out, "error boot: load module %s: %v\n", rel, err)
		}
	}
	fmt.Fprintf(out, "info boot: loaded %d of %d %s in %d ms%s\n", loaded, total, what, time.Since(start).Milliseconds(), note)
}

func loadModule(file string) error {
	fd, err := unix.Open(file, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.FinitModule(fd, "", 0)
}
