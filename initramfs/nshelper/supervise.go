package main

// -supervise: the guest's uinit. It loads the kernel modules and finds the
// agent (bootstrap.go), runs the agent and starts it again when
// it dies (a crash, an OOM kill, a SIGKILL), waiting longer each time it
// dies young so a broken agent cannot spin. It is also the subreaper for
// everything the agent started: container shims whose agent died are
// reparented here and reaped when they finish. FRACTAL_AGENT_RESTARTS tells
// the agent how many times it was restarted, so it skips boot steps that
// must happen once.

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func supervise(argv []string) {
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	stages := []string{"supervisor=" + uptime()} // bootstrap.go
	mods := startModules()
	delay := 500 * time.Millisecond
	// Counts agents that really started: one that could not (no agent yet)
	// never did the boot's once-only steps, so the next must.
	for restarts := 0; ; {
		started := time.Now()
		if _, err := os.Lstat(argv[0]); os.IsNotExist(err) {
			if err := mountAgentImage(argv[0], mods); err != nil {
				fmt.Fprintf(os.Stderr, "fractal-supervise: %v\n", err)
			} else {
				stages = append(stages, "image="+uptime())
			}
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), fmt.Sprintf("FRACTAL_AGENT_RESTARTS=%d", restarts))
		if restarts == 0 {
			// The first agent waits on the pipe for the modules (later ones
			// find them loaded), and logs the guest uptimes of the boot's
			// stages (bench-boot reads them).
			if mods != nil {
				cmd.ExtraFiles = []*os.File{mods.report}
				cmd.Env = append(cmd.Env, "FRACTAL_MODULES_FD=3")
			}
			cmd.Env = append(cmd.Env, "FRACTAL_BOOT_STAGES="+strings.Join(append(stages, "exec="+uptime()), ","))
		}
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(os.Stderr, "fractal-supervise: cannot start %s: %v\n", argv[0], err)
		} else {
			if restarts == 0 && mods != nil {
				mods.report.Close() // the agent's now
			}
			restarts++
			fmt.Fprintf(os.Stderr, "fractal-supervise: %s %s\n", argv[0], reapUntil(cmd.Process.Pid))
		}
		if time.Since(started) > 30*time.Second {
			delay = 500 * time.Millisecond
		} else if delay < 10*time.Second {
			delay *= 2
		}
		fmt.Fprintf(os.Stderr, "fractal-supervise: restarting in %v\n", delay)
		time.Sleep(delay)
	}
}

// reapUntil reaps every child (orphans included) until `pid` ends, and says how it ended.
func reapUntil(pid int) string {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Sprintf("lost: %v", err)
		}
		if got != pid {
			continue
		}
		if ws.Signaled() {
			return fmt.Sprintf("killed by signal %d", int(ws.Signal()))
		}
		return fmt.Sprintf("exited with status %d", ws.ExitStatus())
	}
}
