// Command sleeper is the whole image of the test's pod: as the sandbox
// (pause) and the container it waits for a signal; "sleeper echo ARGS..."
// prints its arguments and exits, for an exec traced inside the container.
package main

import (
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "echo" {
		_, _ = os.Stdout.WriteString(strings.Join(os.Args[2:], " ") + "\n")
		return
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
