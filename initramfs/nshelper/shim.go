package main

// -shim DIR: the keeper of one container's stdio, so the container outlives
// the agent that started it (conmon and containerd-shim play this part for
// podman and docker). The agent makes three FIFOs in the bundle DIR; the
// shim opens each read-write, hands them to the runtime as its stdio, and
// waits. Because the shim holds both ends, a container writing while no
// agent reads blocks when the pipe is full instead of dying of SIGPIPE, and
// its stdin does not hit EOF when the agent goes; a restarted agent opens the
// FIFOs by name and carries on. When the runtime exits the shim writes
// DIR/exit ("exited N" or "signaled N") and leaves, which closes the last
// write ends: the agent reads EOF once it has drained the output.
//
// SIGUSR1 means the client closed the container's stdin: the shim drops its
// own writer so the container reads EOF once the agent's writer is closed.
//
// With -console SOCK (a container with a terminal) the runtime is given
// --console-socket SOCK by the agent and sends the PTY master here, as it
// does to conmon; the shim then copies between the master and the FIFOs.
// (crun run without a console socket insists on a terminal of its own.)

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// With pivot the shim first makes its own root pivotable (see movedRoot) and
// starts the runtime itself: one Go start per container instead of two.
func runShim(dir string, withStdin bool, consolePath string, pivot bool, argv []string) {
	// Our own session: signals for the agent's process group are not ours.
	_, _ = unix.Setsid()
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE, syscall.SIGINT, syscall.SIGTERM)
	open := func(name string, flags int) *os.File {
		f, err := os.OpenFile(filepath.Join(dir, name), flags, 0)
		if err != nil {
			fail(exitFailed, "shim: %v", err)
		}
		return f
	}
	stdout := open("stdout", os.O_RDWR)
	stderr := open("stderr", os.O_RDWR)
	var stdin *os.File
	var console net.Listener
	if consolePath != "" {
		var err error
		if console, err = net.Listen("unix", consolePath); err != nil {
			fail(exitFailed, "shim: console socket: %v", err)
		}
	}
	if withStdin {
		// The read-write open comes first: it is the writer that lets the
		// read-only open return at once.
		keep := open("stdin", os.O_RDWR)
		stdin = open("stdin", os.O_RDONLY)
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		go func() {
			<-usr1
			keep.Close()
		}()
	} else {
		null, err := os.Open(os.DevNull)
		if err != nil {
			fail(exitFailed, "shim: %v", err)
		}
		stdin = null
	}
	if pivot {
		// On this locked thread: the child is forked from it and so starts
		// in the namespace it made.
		if err := movedRoot(); err != nil {
			writeExit(dir, fmt.Sprintf("exited %d", exitFailed))
			fail(exitFailed, "shim: %v", err)
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if console != nil {
		// The terminal carries the container's input and output; the
		// runtime's own stdio only its error messages.
		null, _ := os.Open(os.DevNull)
		cmd.Stdin, cmd.Stdout = null, stderr
	}
	if err := cmd.Start(); err != nil {
		writeExit(dir, fmt.Sprintf("exited %d", exitNotFound))
		fail(exitFailed, "shim: %v", err)
	}
	var copied chan struct{}
	if console != nil {
		copied = proxyTerminal(console, stdin, stdout, withStdin)
	} else {
		stdin.Close()
	}
	status := "exited 0"
	if err := cmd.Wait(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			ws := ee.Sys().(syscall.WaitStatus)
			if ws.Signaled() {
				status = fmt.Sprintf("signaled %d", int(ws.Signal()))
			} else {
				status = fmt.Sprintf("exited %d", ws.ExitStatus())
			}
		} else {
			status = fmt.Sprintf("exited %d", exitFailed)
		}
	}
	if copied != nil {
		// The last output is still in the terminal: the copy ends when the
		// master reads EIO (no slave left), or when nobody sent a master.
		console.Close()
		select {
		case <-copied:
		case <-time.After(2 * time.Second):
		}
	}
	writeExit(dir, status)
}

// proxyTerminal receives the PTY master from the runtime and copies it to
// the stdout FIFO (and the stdin FIFO to it); the channel closes when the
// output copy is done.
func proxyTerminal(l net.Listener, stdin, stdout *os.File, withStdin bool) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		master, err := receiveFd(conn.(*net.UnixConn))
		if err != nil {
			fmt.Fprintf(os.Stderr, "fractal-ns: shim: console: %v\n", err)
			return
		}
		if withStdin {
			go func() { _, _ = io.Copy(master, stdin) }()
		}
		_, _ = io.Copy(stdout, master)
	}()
	return done
}

func receiveFd(c *net.UnixConn) (*os.File, error) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) == 0 {
		return nil, fmt.Errorf("no file descriptor received (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) == 0 {
		return nil, fmt.Errorf("no file descriptor received (%v)", err)
	}
	return os.NewFile(uintptr(fds[0]), "pty-master"), nil
}

// writeExit makes DIR/exit appear whole: a reader never sees half a status.
func writeExit(dir, status string) {
	tmp := filepath.Join(dir, "exit.tmp")
	if err := os.WriteFile(tmp, []byte(status+"\n"), 0o644); err == nil {
		_ = os.Rename(tmp, filepath.Join(dir, "exit"))
	}
}
