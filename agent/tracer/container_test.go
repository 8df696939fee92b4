package tracer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeward/nodeward/agent/cgroups"
	"github.com/nodeward/nodeward/internal/testutil"
)

// TestContainerFromCgroupFixtures reads /proc/PID/cgroup files in the
// layouts nodes have (containerd and cri-o; systemd and cgroupfs drivers;
// cgroup v1, v2 and hybrid) and finds the container and pod.
func TestContainerFromCgroupFixtures(t *testing.T) {
	for _, tc := range []struct {
		file, container, pod string
	}{
		{"containerd-systemd-v2", "3f1e9c2a7b8d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f", "7e3b2c1a-4f5d-4e6b-9a8c-1d2e3f4a5b6c"},
		{"containerd-cgroupfs-v2", "9b8a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"},
		{"containerd-cgroupfs-v1", "2c4e6a8b0d1f3e5a7c9b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c", "5c2d7e1f-8a9b-4c3d-a2e1-f0a9b8c7d6e5"},
		{"containerd-systemd-v1", "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2", "1f2e3d4c-5b6a-4789-8abc-def012345678"},
		{"crio-systemd-v2", "5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c", "9c8b7a6d-5e4f-4321-b0a9-8f7e6d5c4b3a"},
		{"crio-conmon-systemd-v2", "", "9c8b7a6d-5e4f-4321-b0a9-8f7e6d5c4b3a"}, // cri-o's monitor: in the pod, not a container
		{"crio-cgroupfs-v1", "e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e5d6c7b8a9f0e1d2", "3a4b5c6d-7e8f-4901-a234-56789abcdef0"},
		{"host-systemd-v2", "", ""},
		{"host-hybrid", "", ""},
	} {
		t.Run(tc.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", "cgroup", tc.file+".cgroup"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			info, err := cgroups.Parse(f)
			if err != nil {
				t.Fatal(err)
			}
			if info.ContainerID != tc.container || info.PodUID != tc.pod {
				t.Errorf("%s: container %q pod %q, want %q %q", info.Path, info.ContainerID, info.PodUID, tc.container, tc.pod)
			}
		})
	}
}

// TestContainerAttributionLive places processes into cgroups laid out as
// the kubelet lays them out (a cgroup v1 memory hierarchy with the cgroupfs
// driver, and cgroup2 with the systemd driver), has them exec, and finds the
// container and pod on their exec events. It needs both hierarchies: a
// hybrid host, as CI's is.
func TestContainerAttributionLive(t *testing.T) {
	testutil.RequirePrivileged(t)
	suffix := fmt.Sprintf("%016x", time.Now().UnixNano())
	v2, mem := cgroupMount(t, hierV2), cgroupMount(t, hierMemory)
	cases := []struct {
		name, base, rel, container, pod string
	}{
		{
			name: "v1-cgroupfs", base: mem,
			rel:       "kubepods/burstable/pod5c2d7e1f-8a9b-4c3d-a2e1-f0a9b8c7d6e5/" + strings.Repeat("ab", 24) + suffix,
			container: strings.Repeat("ab", 24) + suffix, pod: "5c2d7e1f-8a9b-4c3d-a2e1-f0a9b8c7d6e5",
		},
		{
			name: "v2-systemd", base: v2,
			rel: "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7e3b2c1a_4f5d_4e6b_9a8c_1d2e3f4a5b6c.slice/cri-containerd-" +
				strings.Repeat("cd", 24) + suffix + ".scope",
			container: strings.Repeat("cd", 24) + suffix, pod: "7e3b2c1a-4f5d-4e6b-9a8c-1d2e3f4a5b6c",
		},
	}
	tr := startTracer(t, Config{})
	c := &collector{}
	stop := run(t, tr, c)
	type proc struct {
		cmd    *exec.Cmd
		marker string
		cg     string
	}
	var procs []proc
	for _, tc := range cases {
		cg := testCgroup(t, tc.base, tc.rel)
		marker := "cg-" + tc.name + "-" + suffix
		cmd := exec.Command("/bin/sh", "-c", `read x; /bin/true "$x"; echo done`)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		enterCgroup(t, cg, cmd.Process.Pid)
		fmt.Fprintln(in, marker)
		procs = append(procs, proc{cmd, marker, cg})
	}
	for _, p := range procs {
		if err := p.cmd.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	found := map[string]bool{}
	waitFor(t, 10*time.Second, func() bool {
		for _, ev := range c.snapshot() {
			for i, tc := range cases {
				p := ev.GetExec().GetProcess()
				if len(p.GetArgs()) != 2 || p.GetArgs()[1] != procs[i].marker || found[tc.name] {
					continue
				}
				found[tc.name] = true
				if p.GetContainerId() != tc.container || p.GetPod().GetUid() != tc.pod || p.GetCgroupPath() != "/"+tc.rel {
					t.Errorf("%s: container %q pod %q path %q, want %q %q %q", tc.name, p.GetContainerId(), p.GetPod().GetUid(),
						p.GetCgroupPath(), tc.container, tc.pod, "/"+tc.rel)
				}
				if tc.base == v2 {
					if id, _ := HostCgroupID(procs[i].cg); p.GetCgroupId() != id {
						t.Errorf("%s: cgroup id %d, want %d", tc.name, p.GetCgroupId(), id)
					}
				}
			}
		}
		return len(found) == len(cases)
	})
	stop()
}
