// Command portsload holds listening sockets and established loopback
// connections for bench/ports.sh: it opens -listeners TCP listeners on
// loopback (alternating 127.0.0.1 and ::1), connects -conns times to its
// first listener and accepts every connection itself, so it holds both ends
// of each. It prints "ready" once all are open and holds them until it is
// signalled or its parent dies.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	listeners := flag.Int("listeners", 10, "TCP listeners to open")
	conns := flag.Int("conns", 4000, "established connections to hold (two descriptors each)")
	flag.Parse()
	if err := run(*listeners, *conns); err != nil {
		fmt.Fprintln(os.Stderr, "portsload:", err)
		os.Exit(1)
	}
}

func run(listeners, conns int) error {
	// Never outlive the bench script, however it ends.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGTERM), 0, 0, 0); err != nil {
		return fmt.Errorf("parent death signal: %w", err)
	}
	if listeners < 1 {
		return fmt.Errorf("need at least one listener")
	}
	// Two descriptors per connection: raise the soft limit to the hard one.
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	rl.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	if need := uint64(2*conns + listeners + 16); need > rl.Max {
		return fmt.Errorf("%d connections need %d descriptors, the hard limit is %d", conns, need, rl.Max)
	}
	var lns []net.Listener
	for i := range listeners {
		network, addr := "tcp4", "127.0.0.1:0"
		if i%2 == 1 {
			network, addr = "tcp6", "[::1]:0"
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	held := make([]net.Conn, 0, 2*conns)
	for range conns {
		c, err := net.Dial("tcp4", lns[0].Addr().String())
		if err != nil {
			return fmt.Errorf("after %d connections: %w", len(held)/2, err)
		}
		s, err := lns[0].Accept()
		if err != nil {
			return err
		}
		held = append(held, c, s)
	}
	fmt.Println("ready", os.Getpid(), len(lns), len(held)/2)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}
