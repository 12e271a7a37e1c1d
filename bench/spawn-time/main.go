// spawn-time: how long the guest itself takes to start a program and see it
// exit, with no remote-execution tool in the way. bench-peers runs it in the
// guest (through the host-root backmount) and takes its median as the part
// of a round trip that every tool pays alike; what is left is each tool's
// own overhead. Go's fork/exec/wait, as a shell or sshd would do it in C.
//
// usage: spawn-time N CMD [ARG...]   prints N times in ms, one line.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: spawn-time N CMD [ARG...]")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[1])
	if err != nil || n < 1 {
		fmt.Fprintf(os.Stderr, "spawn-time: bad count %q\n", os.Args[1])
		os.Exit(2)
	}
	times := make([]string, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		// Stdio on /dev/null (exec's default): the timed program writes nowhere slow.
		if err := exec.Command(os.Args[2], os.Args[3:]...).Run(); err != nil {
			fmt.Fprintf(os.Stderr, "spawn-time: %s: %v\n", os.Args[2], err)
			os.Exit(1)
		}
		times = append(times, strconv.FormatFloat(float64(time.Since(start).Microseconds())/1000, 'f', 3, 64))
	}
	fmt.Println(strings.Join(times, " "))
}
