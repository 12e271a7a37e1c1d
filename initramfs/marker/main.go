// marker is the init of the minimal initramfs that bench-boot compares
// against and that tests use as "a guest whose agent cannot start": it
// prints a marker line on the console, then powers off -- or, when the
// kernel command line has fractal_hang=1 (unknown key=value words reach init
// as environment variables), waits forever.
package main

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

func main() {
	fmt.Println("FRACTAL-MARKER: minimal init reached")
	if os.Getenv("fractal_hang") == "1" {
		for {
			time.Sleep(time.Hour)
		}
	}
	syscall.Sync()
	if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Println("marker: power off:", err)
	}
	for {
		time.Sleep(time.Hour)
	}
}
