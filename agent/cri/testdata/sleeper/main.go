// Command sleeper is the whole image of the test's pod: as the sandbox
// (pause) and the container it waits for a signal; "sleeper echo ARGS..."
// prints its arguments and exits, for an exec traced inside the container;
// "sleeper listen ADDR" holds a TCP listener while it waits.
package main

import (
	"net"
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
	if len(os.Args) > 2 && os.Args[1] == "listen" {
		l, err := net.Listen("tcp", os.Args[2])
		if err != nil {
			_, _ = os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		defer l.Close()
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
