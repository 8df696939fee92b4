package inventory

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/nodeward/nodeward/agent/cgroups"
	"github.com/nodeward/nodeward/agent/inventory/sockdiag"
	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"golang.org/x/sys/unix"
)

func init() {
	source.Register(source.Source{Name: "ports", Phase: source.Facts, Collect: collectPorts})
}

func collectPorts(ctx context.Context, env *source.Env, _ *nodewardv1.Snapshot) (*nodewardv1.Snapshot, error) {
	inv, err := ScanPorts(ctx, env)
	if inv == nil {
		return nil, err
	}
	return &nodewardv1.Snapshot{Ports: inv}, err
}

// dumps are the socket tables ss -ltu reads: TCP and UDP, IPv4 and IPv6.
var dumps = []struct{ family, protocol uint8 }{
	{unix.AF_INET, unix.IPPROTO_TCP},
	{unix.AF_INET6, unix.IPPROTO_TCP},
	{unix.AF_INET, unix.IPPROTO_UDP},
	{unix.AF_INET6, unix.IPPROTO_UDP},
}

// ScanPorts lists the listening TCP and unconnected UDP sockets (what ss -ltu
// shows) of every network namespace on the node, with the process that holds
// each. Namespaces are found from the host's processes (env.Proc/PID/ns/net)
// and from the bind mounts under /run/netns in the host root. An error in one
// namespace is reported and the others are still listed.
//
// A port's uid is the socket's, as the kernel records it (ss -e): that of
// the process that created it. Its pid is one process holding it; when
// several do (forked workers), the search prefers one in the socket's
// namespace with the socket's uid, at the lowest descriptor window, then the
// lowest pid. A socket no readable process holds (a kernel socket, or one
// held by a process the agent may not inspect) has no pid.
func ScanPorts(ctx context.Context, env *source.Env) (*nodewardv1.PortInventory, error) {
	procDir, err := os.Open(env.Proc)
	if err != nil {
		return nil, fmt.Errorf("ports: %w", err)
	}
	defer procDir.Close()
	procFD := int(procDir.Fd())
	procs, err := listProcs(procDir)
	if err != nil {
		return nil, fmt.Errorf("ports: %w", err)
	}

	nss, closeNS := findNetNS(env, procFD, procs)
	defer closeNS()
	var errs []error
	inv := &nodewardv1.PortInventory{}
	for _, ns := range nss {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ports, err := listenersIn(ns, procFD)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("ports: netns %s: %w", nsName(ns.ino), err))
			}
			continue
		}
		inv.NetnsCount++
		inv.Ports = append(inv.Ports, ports...)
	}

	search := newOwnerSearch(procFD, procs, inv.Ports)
	if err := search.run(ctx); err != nil {
		return nil, err
	}
	if len(search.unmatched) > 0 {
		reason := search.unknownReason()
		for _, p := range search.unmatched {
			p.OwnerUnknownReason = reason
		}
	}
	slog.Debug("ports: owner search", "listeners", len(inv.Ports), "unowned", len(search.unmatched),
		"processes", len(procs), "fds_read", search.fdsRead, "denied", search.denied)
	if len(search.unmatched) > 0 && search.denied > 0 && search.denied*2 > search.visited {
		errs = append(errs, fmt.Errorf("ports: owners of %d listening sockets unknown: %d of %d processes' file descriptors could not be read (the agent needs root)",
			len(search.unmatched), search.denied, search.visited))
	}
	owners := map[int]*owner{}
	for _, p := range inv.Ports {
		if p.Pid == 0 {
			continue
		}
		o, ok := owners[int(p.Pid)]
		if !ok {
			o = readOwner(procFD, int(p.Pid))
			owners[int(p.Pid)] = o
		}
		p.ProcessName, p.Exe, p.Cmdline = o.comm, o.exe, o.cmdline
		p.ContainerId, p.PodUid = o.cgroup.ContainerID, o.cgroup.PodUID
		if env.Pods != nil && p.ContainerId != "" {
			if named, ok := env.Pods.Lookup(p.ContainerId); ok {
				p.Pod = &nodewardv1.Pod{Uid: named.Uid, Name: named.Name, Namespace: named.Namespace, ContainerName: named.ContainerName}
			}
		}
	}
	slices.SortFunc(inv.Ports, comparePorts)
	return inv, errors.Join(errs...)
}

func comparePorts(a, b *nodewardv1.ListeningPort) int {
	if a.HostNetns != b.HostNetns {
		if a.HostNetns {
			return -1
		}
		return 1
	}
	return cmp.Or(
		cmp.Compare(len(a.Netns), len(b.Netns)), cmp.Compare(a.Netns, b.Netns),
		cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.IpVersion, b.IpVersion),
		cmp.Compare(a.Port, b.Port), cmp.Compare(a.Address, b.Address),
		cmp.Compare(a.SocketInode, b.SocketInode),
	)
}

// netNS is one network namespace and how to open it.
type netNS struct {
	ino  uint64
	host bool
	// file is an open /run/netns entry, or nil.
	file *os.File
	// pids are processes inside it, to open PID/ns/net.
	pids []int
}

func nsName(ino uint64) string { return "net:[" + strconv.FormatUint(ino, 10) + "]" }

// findNetNS gathers the namespaces of the processes and of /run/netns, the
// host's first. The caller calls the returned func to close them.
func findNetNS(env *source.Env, procFD int, procs []*procEntry) ([]*netNS, func()) {
	byIno := map[uint64]*netNS{}
	var order []*netNS
	add := func(ino uint64) *netNS {
		ns := byIno[ino]
		if ns == nil {
			ns = &netNS{ino: ino}
			byIno[ino] = ns
			order = append(order, ns)
		}
		return ns
	}
	for _, p := range procs {
		if p.netns != 0 {
			ns := add(p.netns)
			ns.pids = append(ns.pids, p.pid)
		}
	}
	if host := hostNetNS(procFD, procs); host != 0 {
		add(host).host = true
	}
	var files []*os.File
	if env.Root != nil {
		entries, err := env.Root.ReadDir("/run/netns")
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			slog.Debug("ports: /run/netns", "err", err)
		}
		for _, e := range entries {
			f, ino, err := openNSFile(env, path.Join("/run/netns", e.Name()))
			if err != nil {
				// A name left behind by a deleted namespace is no longer a
				// mount of nsfs: nothing to list.
				slog.Debug("ports: skipping /run/netns entry", "name", e.Name(), "err", err)
				continue
			}
			ns := add(ino)
			if ns.file == nil {
				ns.file = f
				files = append(files, f)
			} else {
				_ = f.Close()
			}
		}
	}
	slices.SortStableFunc(order, func(a, b *netNS) int {
		if a.host != b.host {
			if a.host {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.ino, b.ino)
	})
	return order, func() {
		for _, f := range files {
			_ = f.Close()
		}
	}
}

// openNSFile opens a /run/netns bind mount and checks it is one.
func openNSFile(env *source.Env, name string) (*os.File, uint64, error) {
	f, err := env.Root.Open(name)
	if err != nil {
		return nil, 0, err
	}
	var sfs unix.Statfs_t
	var st unix.Stat_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("statfs %s: %w", name, err)
	}
	if sfs.Type != unix.NSFS_MAGIC {
		_ = f.Close()
		return nil, 0, fmt.Errorf("%s is not a namespace file", name)
	}
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("stat %s: %w", name, err)
	}
	return f, st.Ino, nil
}

// hostNetNS is the namespace of the host's init. When init cannot be read,
// kthreadd (PID 2) stands in: kernel threads always live in the initial
// network namespace.
func hostNetNS(procFD int, procs []*procEntry) uint64 {
	for _, p := range procs {
		switch p.pid {
		case 1:
			if p.netns != 0 {
				return p.netns
			}
		case 2:
			if comm, err := readProcFile(procFD, "2/comm", 64); err == nil && strings.TrimSpace(string(comm)) == "kthreadd" {
				return p.netns
			}
		}
		if p.pid > 2 {
			break
		}
	}
	return 0
}

// listenersIn lists one namespace's listening sockets: by sock_diag from
// inside it, or, when the agent may not enter it (setns needs
// CAP_SYS_ADMIN, which the DaemonSet does not grant), from the socket
// tables of a process in it.
func listenersIn(ns *netNS, procFD int) ([]*nodewardv1.ListeningPort, error) {
	socks, err := dumpIn(ns, procFD)
	if errors.Is(err, unix.EPERM) && len(ns.pids) > 0 {
		socks, err = procTablesOf(ns, procFD)
	}
	if err != nil {
		return nil, err
	}
	ports := make([]*nodewardv1.ListeningPort, 0, len(socks))
	for _, s := range socks {
		ports = append(ports, portOf(s, ns))
	}
	return ports, nil
}

// dumpIn dumps ns's listening sockets through sock_diag.
func dumpIn(ns *netNS, procFD int) ([]sockdiag.Socket, error) {
	c, err := dialNS(ns, procFD)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var out []sockdiag.Socket
	for _, d := range dumps {
		states := uint32(sockdiag.Listening)
		if d.protocol == unix.IPPROTO_TCP {
			states = sockdiag.ListeningTCP
		}
		socks, err := c.Dump(d.family, d.protocol, states)
		if err != nil {
			return nil, err
		}
		out = append(out, socks...)
	}
	return out, nil
}

// procTablesOf reads ns's listening sockets from /proc/PID/net of one of
// its processes, checked to be in ns still once read (pids are reused).
func procTablesOf(ns *netNS, procFD int) ([]sockdiag.Socket, error) {
	err := fs.ErrNotExist
	for _, pid := range ns.pids {
		var socks []sockdiag.Socket
		if socks, err = readProcTables(procFD, pid); err != nil {
			continue
		}
		var st unix.Stat_t
		if serr := unix.Fstatat(procFD, strconv.Itoa(pid)+"/ns/net", &st, 0); serr == nil && st.Ino == ns.ino {
			return socks, nil
		}
		err = fs.ErrNotExist
	}
	return nil, err
}

// readProcTables parses pid's tcp, tcp6, udp and udp6 tables.
func readProcTables(procFD, pid int) ([]sockdiag.Socket, error) {
	var out []sockdiag.Socket
	for _, d := range dumps {
		name := strconv.Itoa(pid) + "/net/" + procTable(d.family, d.protocol)
		fd, err := unix.Openat(procFD, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && d.family == unix.AF_INET6 {
			continue // IPv6 is off: the IPv4 tables opened, so the process is there
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		f := os.NewFile(uintptr(fd), name)
		socks, err := sockdiag.ParseProcNet(f, d.family, d.protocol)
		_ = f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, socks...)
	}
	return out, nil
}

// procTable names the /proc/PID/net table of a family and protocol.
func procTable(family, protocol uint8) string {
	name := "tcp"
	if protocol == unix.IPPROTO_UDP {
		name = "udp"
	}
	if family == unix.AF_INET6 {
		name += "6"
	}
	return name
}

// dialNS opens a sock_diag socket in ns.
func dialNS(ns *netNS, procFD int) (*sockdiag.Conn, error) {
	if ns.file != nil {
		return sockdiag.DialNetNS(int(ns.file.Fd()))
	}
	err := fs.ErrNotExist
	for _, pid := range ns.pids {
		fd, oerr := unix.Openat(procFD, strconv.Itoa(pid)+"/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if oerr != nil {
			err = oerr
			continue
		}
		// The pid may have been reused since the scan: check it is the
		// namespace we mean.
		var st unix.Stat_t
		if serr := unix.Fstat(fd, &st); serr != nil || st.Ino != ns.ino {
			_ = unix.Close(fd)
			continue
		}
		c, derr := sockdiag.DialNetNS(fd)
		_ = unix.Close(fd)
		return c, derr
	}
	return nil, err
}

func portOf(s sockdiag.Socket, ns *netNS) *nodewardv1.ListeningPort {
	p := &nodewardv1.ListeningPort{
		Protocol:    nodewardv1.Protocol_PROTOCOL_TCP,
		Address:     s.Addr.String(),
		Port:        uint32(s.Port),
		Exposure:    exposureOf(s.Addr),
		Uid:         s.UID,
		Netns:       nsName(ns.ino),
		HostNetns:   ns.host,
		IpVersion:   4,
		SocketInode: uint64(s.Inode),
	}
	if s.Protocol == unix.IPPROTO_UDP {
		p.Protocol = nodewardv1.Protocol_PROTOCOL_UDP
	}
	if s.Family == unix.AF_INET6 {
		p.IpVersion = 6
	}
	return p
}

// exposureOf classifies a bound address: the wildcard reaches every
// interface, loopback only the node itself.
func exposureOf(a netip.Addr) nodewardv1.Exposure {
	a = a.Unmap()
	switch {
	case a.IsUnspecified():
		return nodewardv1.Exposure_EXPOSURE_ANY
	case a.IsLoopback():
		return nodewardv1.Exposure_EXPOSURE_LOOPBACK
	default:
		return nodewardv1.Exposure_EXPOSURE_SPECIFIC
	}
}

// owner is what the report says about a socket's process.
type owner struct {
	comm, exe string
	cmdline   []string
	cgroup    cgroups.Info
}

// readOwner reads what it can of pid; a process that exited meanwhile
// leaves the fields empty.
func readOwner(procFD, pid int) *owner {
	o := &owner{}
	p := strconv.Itoa(pid)
	if b, err := readProcFile(procFD, p+"/comm", 256); err == nil {
		o.comm = strings.TrimSuffix(string(b), "\n")
	}
	buf := make([]byte, unix.PathMax)
	if n, err := unix.Readlinkat(procFD, p+"/exe", buf); err == nil {
		o.exe = string(buf[:n])
	}
	if b, err := readProcFile(procFD, p+"/cmdline", 256<<10); err == nil {
		o.cmdline = splitCmdline(b)
	}
	if b, err := readProcFile(procFD, p+"/cgroup", 64<<10); err == nil {
		if info, err := cgroups.Parse(strings.NewReader(string(b))); err == nil {
			o.cgroup = info
		}
	}
	return o
}

// splitCmdline splits /proc/PID/cmdline at its NUL separators.
func splitCmdline(b []byte) []string {
	s := strings.TrimSuffix(string(b), "\x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}
