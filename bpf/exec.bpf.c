// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Process lifecycle: every exec, fork and process exit on the node, through
 * the sched_process_* tracepoints (tp_btf, or raw tracepoints where tp_btf
 * cannot attach). No kprobes: some kernels have none. */
#include "common.h"

#define BUF_SIZE 8192
#define HALF (BUF_SIZE / 2)
#define NAME_MAX_READ 256
#define ARGS_MAX 4096
#define CWD_DEPTH 24

/* bounded(x, mask) is x & mask, computed after a compiler barrier so that
 * clang cannot drop a mask it thinks redundant: the verifier needs it. */
static __always_inline u64 bounded(u64 x, u64 mask)
{
	asm volatile("" : "+r"(x));
	return x & mask;
}

#define FLAG_ARGS_TRUNCATED 1
#define FLAG_CWD_TRUNCATED 2
#define FLAG_FILENAME_TRUNCATED 4

/* The fixed part of an exec event, then buf holding, in order: the filename
 * (NUL-terminated), the cwd's components leaf first (each NUL-terminated),
 * and argv as the kernel keeps it (NUL-separated). Only the used part of buf
 * goes into the ring buffer. */
struct exec_event {
	u8 type;
	u8 flags;
	u16 filename_len;
	u16 cwd_len;
	u16 args_len;
	u32 pid;
	u32 tid;
	u32 ppid;
	u32 uid;
	u32 gid;
	u32 euid;
	u32 auid;
	u32 sessionid;
	u64 ktime;
	u64 start_ticks;
	u64 parent_start_ticks;
	u64 cgroup_id;
	u64 mem_cgroup_id;
	u8 comm[TASK_COMM_LEN];
	u8 buf[BUF_SIZE];
};

struct exit_event {
	u8 type;
	u8 pad[3];
	u32 pid;
	u32 tid;
	u32 exit_code;
	u64 ktime;
	u64 start_ticks;
	u64 duration_ns;
};

struct fork_event {
	u8 type;
	u8 pad[3];
	u32 pid;
	u32 ppid;
	u32 pad2;
	u64 ktime;
	u64 start_ticks;
	u64 parent_start_ticks;
};

/* Force bpf2go to emit Go types for the events. */
const struct exec_event *unused_exec __attribute__((unused));
const struct exit_event *unused_exit __attribute__((unused));
const struct fork_event *unused_fork __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct exec_event);
} exec_scratch SEC(".maps");

/* cwd_components writes the names from the cwd up to the root (of the task's
 * mount namespace or chroot) into buf at off, leaf first. */
static __always_inline u32 cwd_components(struct task_struct *task, struct exec_event *ev, u32 off)
{
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	struct dentry *root_dentry = BPF_CORE_READ(fs, root.dentry);
	struct vfsmount *root_mnt = BPF_CORE_READ(fs, root.mnt);
	struct dentry *dentry = BPF_CORE_READ(fs, pwd.dentry);
	struct vfsmount *vfsmnt = BPF_CORE_READ(fs, pwd.mnt);
	struct mount *mnt = container_of(vfsmnt, struct mount, mnt);
	u32 start = off;
	int i;

	for (i = 0; i < CWD_DEPTH; i++) {
		if (dentry == root_dentry && vfsmnt == root_mnt)
			goto done;
		struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
		struct dentry *mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
		if (dentry == mnt_root || dentry == parent) {
			struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
			if (dentry != mnt_root || mnt_parent == mnt)
				goto done; /* the namespace's root */
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = mnt_parent;
			vfsmnt = &mnt->mnt;
			continue;
		}
		if (off >= HALF)
			break;
		const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
		long n = bpf_probe_read_kernel_str(&ev->buf[bounded(off, HALF - 1)], NAME_MAX_READ, name);
		if (n <= 0)
			break;
		off += n;
		dentry = parent;
	}
	ev->flags |= FLAG_CWD_TRUNCATED;
done:
	ev->cwd_len = off - start;
	return off;
}

static __always_inline int handle_exec(struct task_struct *task, struct linux_binprm *bprm)
{
	if (filtered_out())
		return 0;
	u32 zero = 0;
	struct exec_event *ev = bpf_map_lookup_elem(&exec_scratch, &zero);
	if (!ev)
		return 0;

	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	struct task_struct *parent = BPF_CORE_READ(task, real_parent);
	const struct cred *cred = BPF_CORE_READ(task, cred);

	ev->type = EVENT_EXEC;
	ev->flags = 0;
	ev->pid = BPF_CORE_READ(task, tgid);
	ev->tid = (u32)bpf_get_current_pid_tgid();
	ev->ppid = BPF_CORE_READ(parent, tgid);
	ev->uid = BPF_CORE_READ(cred, uid.val);
	ev->gid = BPF_CORE_READ(cred, gid.val);
	ev->euid = BPF_CORE_READ(cred, euid.val);
	ev->auid = (u32)-1;
	ev->sessionid = (u32)-1;
	if (bpf_core_field_exists(task->loginuid)) {
		ev->auid = BPF_CORE_READ(task, loginuid.val);
		ev->sessionid = BPF_CORE_READ(task, sessionid);
	}
	ev->ktime = bpf_ktime_get_boot_ns();
	ev->start_ticks = start_ticks(leader);
	ev->parent_start_ticks = start_ticks(BPF_CORE_READ(parent, group_leader));
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->mem_cgroup_id = 0;
	if (bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id)) {
		int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
		ev->mem_cgroup_id = BPF_CORE_READ(task, cgroups, subsys[id], cgroup, kn, id);
	}
	bpf_get_current_comm(&ev->comm, sizeof(ev->comm));

	u32 off = 0;
	long n = bpf_probe_read_kernel_str(&ev->buf[0], NAME_MAX_READ, BPF_CORE_READ(bprm, filename));
	if (n < 0)
		n = 0;
	if (n == NAME_MAX_READ)
		ev->flags |= FLAG_FILENAME_TRUNCATED;
	ev->filename_len = n;
	off = n;

	off = cwd_components(task, ev, off);

	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long arg_start = BPF_CORE_READ(mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(mm, arg_end);
	u32 len = arg_end > arg_start ? arg_end - arg_start : 0;
	if (len > ARGS_MAX) {
		len = ARGS_MAX;
		ev->flags |= FLAG_ARGS_TRUNCATED;
	}
	ev->args_len = 0;
	if (off < HALF && len > 0) {
		/* In [1, ARGS_MAX] in a form the verifier can follow. */
		u64 sz = bounded((u64)len - 1, ARGS_MAX - 1) + 1;
		if (bpf_probe_read_user(&ev->buf[bounded(off, HALF - 1)], sz, (void *)arg_start) == 0) {
			ev->args_len = sz;
			off += sz;
		}
	}
	/* off < HALF before argv, and argv adds at most ARGS_MAX: the mask is
	 * lossless, and bounds the size for the verifier. */
	emit(ev, offsetof(struct exec_event, buf) + bounded(off, BUF_SIZE - 1), STAT_EXEC_SEEN);
	return 0;
}

static __always_inline int handle_exit(struct task_struct *task)
{
	/* Only the last thread of a process: the process is gone. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	if (filtered_out())
		return 0;
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	struct exit_event ev = {};
	ev.type = EVENT_EXIT;
	ev.pid = BPF_CORE_READ(task, tgid);
	ev.tid = BPF_CORE_READ(task, pid);
	ev.exit_code = BPF_CORE_READ(task, exit_code);
	ev.ktime = bpf_ktime_get_boot_ns();
	ev.start_ticks = start_ticks(leader);
	ev.duration_ns = ev.ktime - BPF_CORE_READ(leader, start_boottime);
	emit(&ev, sizeof(ev), STAT_EXIT_SEEN);
	return 0;
}

static __always_inline int handle_fork(struct task_struct *parent, struct task_struct *child)
{
	/* Threads are not processes. */
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	if (filtered_out())
		return 0;
	struct fork_event ev = {};
	ev.type = EVENT_FORK;
	ev.pid = BPF_CORE_READ(child, tgid);
	struct task_struct *rp = BPF_CORE_READ(child, real_parent);
	ev.ppid = BPF_CORE_READ(rp, tgid);
	ev.ktime = bpf_ktime_get_boot_ns();
	ev.start_ticks = start_ticks(child);
	ev.parent_start_ticks = start_ticks(BPF_CORE_READ(rp, group_leader));
	emit(&ev, sizeof(ev), STAT_FORK_SEEN);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(tp_btf_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return handle_exec(p, bprm);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(tp_btf_exit, struct task_struct *p)
{
	return handle_exit(p);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(tp_btf_fork, struct task_struct *parent, struct task_struct *child)
{
	return handle_fork(parent, child);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(raw_tp_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return handle_exec(p, bprm);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(raw_tp_exit, struct task_struct *p)
{
	return handle_exit(p);
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(raw_tp_fork, struct task_struct *parent, struct task_struct *child)
{
	return handle_fork(parent, child);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
