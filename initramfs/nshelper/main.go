// fractal-ns: the guest's single-threaded Go helper. The agent is a
// multithreaded Bun process, and unshare(CLONE_NEWNS) affects only the
// calling thread, so whatever must change namespaces, or outlive the agent,
// runs here, on a locked OS thread. One role per run, each in its own file;
// this one only parses the flags and picks it:
//
//	fractal-ns -root /host [-bind LOCAL=REMOTE]... [-cwd DIR] -- CMD ARGS...   namespace.go
//	fractal-ns -pivotable -- CMD ARGS...                                       namespace.go
//	fractal-ns -shimd SOCKET                                                 shimd.go
//	fractal-ns -supervise -- AGENT ARGS...                                     supervise.go
//	fractal-ns -modules ORDER [WHAT...]                                        modules.go
//	fractal-ns -dirs PID -- make:PATH | remove:PATH...                        graft.go
//	fractal-ns -graft PID [-freeze CGROUP] -- detach:PATH | PATH=SOURCE...    graft.go
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
)

type binds []string

func (b *binds) String() string     { return strings.Join(*b, ",") }
func (b *binds) Set(s string) error { *b = append(*b, s); return nil }

// Exit statuses as a shell reports them, and 125 for our own failures.
const (
	exitFailed        = 125
	exitNotExecutable = 126
	exitNotFound      = 127
)

func fail(code int, format string, a ...any) {
	fmt.Fprintf(os.Stderr, "fractal-ns: "+format+"\n", a...)
	os.Exit(code)
}

func main() {
	runtime.LockOSThread()
	root := flag.String("root", "/host", "where the host's root is mounted in the guest")
	cwd := flag.String("cwd", "/", "working directory inside the namespace")
	pivotable := flag.Bool("pivotable", false, "run CMD from a root pivot_root(2) accepts (for the OCI runtime)")
	shimd := flag.String("shimd", "", "keep every container's stdio and exit status, serving the agent on this socket")
	sup := flag.Bool("supervise", false, "run CMD and restart it whenever it ends (the guest's uinit)")
	dirs := flag.Int("dirs", 0, "make (or remove) directories of this process's container's writable layer")
	graftPid := flag.Int("graft", 0, "detach and attach mounts in this process's mount namespace")
	freeze := flag.String("freeze", "", "with -graft: the cgroup to freeze while mounts change")
	modules := flag.String("modules", "", "load the kernel modules this order file lists; the arguments name them for the report")
	var bs binds
	flag.Var(&bs, "bind", "LOCAL=REMOTE: host path REMOTE appears at LOCAL (repeatable)")
	flag.Parse()
	argv := flag.Args()
	if *shimd != "" {
		runShimd(*shimd) // shimd.go
	}
	if *modules != "" {
		what := strings.Join(argv, " ")
		if what == "" {
			what = "kernel modules"
		}
		runModules(*modules, what) // modules.go
	}
	if len(argv) == 0 {
		fail(exitFailed, "no command given")
	}
	// One role per run, each in its own file.
	switch {
	case *dirs > 0:
		runDirs(*dirs, argv) // graft.go
	case *graftPid > 0:
		runGraft(*graftPid, *freeze, argv) // graft.go
	case *sup:
		supervise(argv) // supervise.go
	case *pivotable:
		runPivotable(argv) // namespace.go
	default:
		runInNamespace(*root, bs, *cwd, argv) // namespace.go
	}
}
