package cgroups

import (
	"strings"
	"testing"
)

const (
	cid   = "4b3f1e7a9c2d4e5f8a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f"
	pod   = "0f8a7c5e-1b2d-4c3e-9f4a-5b6c7d8e9f01"
	podU  = "0f8a7c5e_1b2d_4c3e_9f4a_5b6c7d8e9f01"
	spod  = "6f2b8a1c9d3e4f5a6b7c8d9e0f1a2b3c" // static pod: a hash, no dashes
	other = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2"
)

func TestFromPath(t *testing.T) {
	tests := []struct {
		name, path     string
		id, rt, podUID string
	}{
		{"containerd systemd v2", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podU + ".slice/cri-containerd-" + cid + ".scope", cid, "containerd", pod},
		{"containerd systemd guaranteed", "/kubepods.slice/kubepods-pod" + podU + ".slice/cri-containerd-" + cid + ".scope", cid, "containerd", pod},
		{"containerd cgroupfs", "/kubepods/besteffort/pod" + pod + "/" + cid, cid, "", pod},
		{"containerd cgroupfs guaranteed", "/kubepods/pod" + pod + "/" + cid, cid, "", pod},
		{"containerd systemd no scope", "/kubepods-besteffort-pod" + podU + ".slice:cri-containerd:" + cid, cid, "containerd", pod},
		{"containerd under its service", "/system.slice/containerd.service/kubepods-burstable-pod" + podU + ".slice:cri-containerd:" + cid, cid, "containerd", pod},
		{"cri-o systemd", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podU + ".slice/crio-" + cid + ".scope", cid, "cri-o", pod},
		{"cri-o nested container cgroup", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podU + ".slice/crio-" + cid + ".scope/container", cid, "cri-o", pod},
		{"cri-o conmon is no container", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podU + ".slice/crio-conmon-" + cid + ".scope", "", "", pod},
		{"cri-o cgroupfs", "/kubepods/burstable/pod" + pod + "/crio-" + cid, cid, "cri-o", pod},
		{"static pod", "/kubepods/burstable/pod" + spod + "/" + cid, cid, "", spod},
		{"docker systemd", "/system.slice/docker-" + cid + ".scope", cid, "docker", ""},
		{"docker cgroupfs", "/docker/" + cid, cid, "", ""},
		{"podman", "/machine.slice/libpod-" + cid + ".scope", cid, "podman", ""},
		{"podman conmon", "/machine.slice/libpod-conmon-" + cid + ".scope", "", "", ""},
		{"host service", "/system.slice/kubelet.service", "", "", ""},
		{"root", "/", "", "", ""},
		{"pod slice only (pause cgroup parent)", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podU + ".slice", "", "", pod},
		{"short bare hex is not an id", "/kubepods/besteffort/pod" + pod + "/abc123", "", "", pod},
		{"uppercase hex is not an id", "/docker/" + strings.ToUpper(cid), "", "", ""},
		{"pod prefix without uid", "/kubepods/podcast", "", "", ""},
		{"slice without kubepods", "/user.slice/user-pod" + podU + ".slice", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := FromPath(tt.path)
			want := Info{ContainerID: tt.id, Runtime: tt.rt, PodUID: tt.podUID, Path: tt.path}
			if got != want {
				t.Errorf("FromPath(%q)\n got %+v\nwant %+v", tt.path, got, want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	hybrid := "12:memory:/kubepods/burstable/pod" + pod + "/" + cid + "\n" +
		"1:name=systemd:/kubepods/burstable/pod" + pod + "/" + cid + "\n" +
		"0::/\n"
	tests := []struct {
		name, in string
		want     Info
		wantErr  bool
	}{
		{"v2", "0::/kubepods.slice/kubepods-pod" + podU + ".slice/cri-containerd-" + cid + ".scope\n",
			Info{cid, "containerd", pod, "/kubepods.slice/kubepods-pod" + podU + ".slice/cri-containerd-" + cid + ".scope"}, false},
		// Hybrid hosts (AL2) leave the unified hierarchy at "/": the v1
		// paths name the container.
		{"hybrid v1 names it", hybrid, Info{cid, "", pod, "/kubepods/burstable/pod" + pod + "/" + cid}, false},
		{"v1 systemd preferred over other controllers",
			"4:memory:/docker/" + other + "\n1:name=systemd:/system.slice/docker-" + cid + ".scope\n",
			Info{cid, "docker", "", "/system.slice/docker-" + cid + ".scope"}, false},
		{"host process", "0::/system.slice/kubelet.service\n", Info{Path: "/system.slice/kubelet.service"}, false},
		{"pod without container keeps the pod", "0::/\n3:cpu:/kubepods/pod" + pod + "\n", Info{PodUID: pod, Path: "/kubepods/pod" + pod}, false},
		{"empty", "", Info{}, false},
		{"path with colons", "0::/kubepods-besteffort-pod" + podU + ".slice:cri-containerd:" + cid + "\n",
			Info{cid, "containerd", pod, "/kubepods-besteffort-pod" + podU + ".slice:cri-containerd:" + cid}, false},
		{"no separator", "garbage\n", Info{}, true},
		{"bad hierarchy id", "x:cpu:/\n", Info{}, true},
		{"one separator", "3:cpu\n", Info{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Parse error = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Parse\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add("0::/kubepods.slice/kubepods-pod" + podU + ".slice/cri-containerd-" + cid + ".scope\n")
	f.Add("12:memory:/kubepods/burstable/pod" + pod + "/" + cid + "\n1:name=systemd:/\n0::/\n")
	f.Add("0::/kubepods-besteffort-pod" + podU + ".slice:cri-containerd:" + cid + "\n")
	f.Add("1:name=systemd:/system.slice/docker-" + cid + ".scope")
	f.Add("::\n:::\n0::\n")
	f.Fuzz(func(t *testing.T, in string) {
		info, err := Parse(strings.NewReader(in))
		if err != nil {
			return
		}
		if info.ContainerID != "" && !isHexID(info.ContainerID, 12) {
			t.Errorf("container id %q is not hex", info.ContainerID)
		}
		if info.PodUID != "" && !isPodUID(info.PodUID) {
			t.Errorf("pod uid %q is malformed", info.PodUID)
		}
		if info.ContainerID != "" && !strings.Contains(in, info.ContainerID) {
			t.Errorf("container id %q is not in the input", info.ContainerID)
		}
	})
}
