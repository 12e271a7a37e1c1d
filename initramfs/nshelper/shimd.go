package main

// -shimd SOCKET: the keeper of every container's stdio, so containers outlive
// the agent that started them (conmon and containerd-shim play this part for
// podman and docker). One process serves all containers: starting one costs
// the agent a message on SOCKET, not a Go start (a per-container shim was a
// fifth of `run --rm` under TCG, and 1-2 MiB per idle container).
//
// For each container the agent makes three FIFOs in its bundle directory;
// the shim opens each read-write, hands them to the runtime as its stdio,
// and holds them. Because the shim holds both ends, a container writing
// while no agent reads blocks when the pipe is full instead of dying of
// SIGPIPE, and its stdin does not hit EOF when the agent goes; a restarted
// agent opens the FIFOs by name and carries on. When the runtime exits the
// shim writes BUNDLE/exit ("exited N" or "signaled N") and then closes its
// ends: the agent reads EOF once it has drained the output.
//
// With a console socket (a container with a terminal) the runtime is given
// --console-socket by the agent and sends the PTY master here, as it does to
// conmon; the shim then copies between the master and the FIFOs. (crun run
// without a console socket insists on a terminal of its own.)
//
// The wire: one JSON object per line each way. A request carries an id its
// reply repeats, since starts are served concurrently:
//
//	{"id":1,"op":"start","bundle":DIR,"stdin":true,"console":SOCK,"argv":[...]} -> {"id":1,"pid":N}
//	{"id":2,"op":"close-stdin","bundle":DIR}                                 -> {"id":2}
//	anything that fails                                                      -> {"id":N,"error":"..."}

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type shimRequest struct {
	ID      int      `json:"id"`
	Op      string   `json:"op"`
	Bundle  string   `json:"bundle"`
	Stdin   bool     `json:"stdin,omitempty"`
	Console string   `json:"console,omitempty"`
	Argv    []string `json:"argv,omitempty"`
}

type shimReply struct {
	ID    int    `json:"id"`
	Pid   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
}

// kept is one running container's stdio, held until its runtime exits.
type kept struct {
	files []*os.File
	// stdinWriter keeps the stdin FIFO from reading EOF while no agent
	// writes; close-stdin drops it.
	stdinWriter *os.File
}

type shimd struct {
	mu       sync.Mutex
	byBundle map[string]*kept
}

func runShimd(socket string) {
	// Our own session: signals for the agent's process group are not ours.
	_, _ = unix.Setsid()
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE, syscall.SIGINT, syscall.SIGTERM)
	_ = os.Remove(socket)
	l, err := net.Listen("unix", socket)
	if err != nil {
		fail(exitFailed, "shimd: %v", err)
	}
	// The agent waits for this line, then the pipe it came on goes away
	// with the agent: nothing more is written to it.
	fmt.Println("ready")
	if null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
		_ = unix.Dup2(int(null.Fd()), 1)
		null.Close()
	}
	s := &shimd{byBundle: map[string]*kept{}}
	for {
		c, err := l.Accept()
		if err != nil {
			fail(exitFailed, "shimd: %v", err)
		}
		go s.serve(c)
	}
}

// serve answers one agent's requests until it hangs up.
func (s *shimd) serve(c net.Conn) {
	defer c.Close()
	var wmu sync.Mutex
	reply := func(r shimReply) {
		b, _ := json.Marshal(r)
		wmu.Lock()
		defer wmu.Unlock()
		_, _ = c.Write(append(b, '\n'))
	}
	in := bufio.NewScanner(c)
	in.Buffer(make([]byte, 64<<10), 1<<20)
	for in.Scan() {
		var req shimRequest
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			reply(shimReply{Error: fmt.Sprintf("shim: bad request: %v", err)})
			continue
		}
		go func() {
			r := shimReply{ID: req.ID}
			var err error
			switch req.Op {
			case "start":
				r.Pid, err = s.start(req)
			case "close-stdin":
				s.closeStdin(req.Bundle)
			default:
				err = fmt.Errorf("unknown request %q", req.Op)
			}
			if err != nil {
				r.Error = "shim: " + err.Error()
			}
			reply(r)
		}()
	}
}

func (s *shimd) start(req shimRequest) (int, error) {
	if !filepath.IsAbs(req.Bundle) || len(req.Argv) == 0 {
		return 0, fmt.Errorf("start needs an absolute bundle directory and a command")
	}
	s.mu.Lock()
	_, dup := s.byBundle[req.Bundle]
	s.mu.Unlock()
	if dup {
		return 0, fmt.Errorf("%s is already running", req.Bundle)
	}
	k := &kept{}
	abandon := func(err error) (int, error) {
		k.close()
		return 0, err
	}
	open := func(name string, flags int) (*os.File, error) {
		f, err := os.OpenFile(filepath.Join(req.Bundle, name), flags, 0)
		if err == nil {
			k.files = append(k.files, f)
		}
		return f, err
	}
	stdout, err := open("stdout", os.O_RDWR)
	if err != nil {
		return abandon(err)
	}
	stderr, err := open("stderr", os.O_RDWR)
	if err != nil {
		return abandon(err)
	}
	var stdin *os.File
	if req.Stdin {
		// The read-write open comes first: it is the writer that lets the
		// read-only open return at once.
		if k.stdinWriter, err = os.OpenFile(filepath.Join(req.Bundle, "stdin"), os.O_RDWR, 0); err != nil {
			return abandon(err)
		}
		stdin, err = os.Open(filepath.Join(req.Bundle, "stdin"))
	} else {
		stdin, err = os.Open(os.DevNull)
	}
	if err != nil {
		return abandon(err)
	}
	var console net.Listener
	if req.Console != "" {
		if console, err = net.Listen("unix", req.Console); err != nil {
			stdin.Close()
			return abandon(fmt.Errorf("console socket: %w", err))
		}
	}
	cmd := exec.Command(req.Argv[0], req.Argv[1:]...)
	cmd.Dir = req.Bundle
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if console != nil {
		// The terminal carries the container's input and output; the
		// runtime's own stdio only its error messages.
		null, _ := os.Open(os.DevNull)
		defer null.Close()
		cmd.Stdin, cmd.Stdout = null, stderr
	}
	if err := startPivotable(cmd); err != nil {
		if console != nil {
			console.Close()
		}
		stdin.Close()
		return abandon(err)
	}
	s.mu.Lock()
	s.byBundle[req.Bundle] = k
	s.mu.Unlock()
	var copied chan struct{}
	if console != nil {
		copied = proxyTerminal(console, stdin, stdout, req.Stdin)
	} else {
		stdin.Close()
	}
	go func() {
		status := waitStatus(cmd.Wait())
		if copied != nil {
			// The last output is still in the terminal: the copy ends when
			// the master reads EIO (no slave left), or when nobody sent one.
			console.Close()
			select {
			case <-copied:
			case <-time.After(2 * time.Second):
			}
			stdin.Close()
		}
		// The status first: an agent that reads EOF finds it there.
		writeExit(req.Bundle, status)
		s.mu.Lock()
		delete(s.byBundle, req.Bundle)
		s.mu.Unlock()
		k.close()
	}()
	return cmd.Process.Pid, nil
}

// startPivotable starts cmd from a root pivot_root(2) accepts (see
// movedRoot), made on a thread of its own: the child is forked from that
// thread and so starts in the namespace it made. The thread is never
// unlocked, so Go ends it with its goroutine instead of reusing it. Each
// start gets a fresh copy of the tree, which holds the mounts (the
// container's root) the agent made just before.
func startPivotable(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := movedRoot(); err != nil {
			errc <- err
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

func waitStatus(err error) string {
	if err == nil {
		return "exited 0"
	}
	if ee, ok := err.(*exec.ExitError); ok {
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			return fmt.Sprintf("signaled %d", int(ws.Signal()))
		}
		return fmt.Sprintf("exited %d", ws.ExitStatus())
	}
	return fmt.Sprintf("exited %d", exitFailed)
}

// closeStdin drops the shim's writer, so the container reads EOF once the
// agent's writer is closed too.
func (s *shimd) closeStdin(bundle string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := s.byBundle[bundle]; k != nil && k.stdinWriter != nil {
		k.stdinWriter.Close()
		k.stdinWriter = nil
	}
}

func (k *kept) close() {
	for _, f := range k.files {
		f.Close()
	}
	if k.stdinWriter != nil {
		k.stdinWriter.Close()
	}
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
		defer master.Close()
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

// writeExit makes BUNDLE/exit appear whole: a reader never sees half a status.
func writeExit(dir, status string) {
	tmp := filepath.Join(dir, "exit.tmp")
	if err := os.WriteFile(tmp, []byte(status+"\n"), 0o644); err == nil {
		_ = os.Rename(tmp, filepath.Join(dir, "exit"))
	}
}
