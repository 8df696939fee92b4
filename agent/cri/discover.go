package cri

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/nodeward/nodeward/agent/hostfs"
)

// DefaultSockets are the CRI sockets looked for under the host root, in
// order: containerd (EKS, most distributions), CRI-O, then k3s's embedded
// containerd. dockershim's socket is gone since Kubernetes 1.24.
var DefaultSockets = []string{
	"/run/containerd/containerd.sock",
	"/run/crio/crio.sock",
	"/run/k3s/containerd/containerd.sock",
}

// ErrNoSocket says no CRI socket was found under the host root.
var ErrNoSocket = errors.New("no CRI socket found")

// Discover returns the path, as the agent reaches it, of the CRI socket: the
// configured one when set (a host path, resolved under the root), else the
// first of candidates that is a socket. Paths resolve inside the root, so
// /var/run -> /run links on the host work from a container too.
func Discover(root *hostfs.Root, configured string, candidates []string) (string, error) {
	if configured != "" {
		candidates = []string{configured}
	}
	var tried []string
	for _, c := range candidates {
		p, err := socketPath(root, c)
		if err == nil {
			return p, nil
		}
		tried = append(tried, err.Error())
	}
	if configured != "" {
		return "", fmt.Errorf("CRI socket: %s", tried[0])
	}
	return "", fmt.Errorf("%w (tried %s)", ErrNoSocket, strings.Join(tried, "; "))
}

func socketPath(root *hostfs.Root, name string) (string, error) {
	fi, err := root.Stat(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%s: not found", name)
		}
		return "", err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return "", fmt.Errorf("%s: not a socket", name)
	}
	p, err := root.RealPath(name)
	if err != nil {
		return "", err
	}
	return p, nil
}
