// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* SSH sessions from the kernel's side: sshd's accept()s (the remote address
 * from the sockaddr the kernel filled in), the fork that hands a connection
 * to its own process, the credential change that makes a session child the
 * user (with the login uid and audit session id PAM set), and the exit of
 * each. sshd is recognised by its executable's inode, which user space puts
 * in sshd_exes after checking the binary, so a renamed copy is still sshd
 * and an unrelated program named "sshd" is not. No kprobes. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#define AF_INET 2
#define AF_INET6 10

enum ssh_event_type {
	SSH_ACCEPT = 1,
	SSH_FORK = 2,
	SSH_SETUID = 3,
	SSH_EXIT = 4,
};

struct ssh_event {
	u8 type;
	u8 family;
	u16 rport;
	u16 lport;
	u16 pad;
	u32 pid;
	u32 ppid;
	u32 child;
	u32 uid;
	u32 auid;
	u32 sessionid;
	u64 ktime;
	u64 start_ticks;
	u8 raddr[16];
	u8 laddr[16];
	u8 comm[16];
};

const struct ssh_event *unused_ssh_event __attribute__((unused));

struct exe_key {
	u64 ino;
	u32 dev;
	u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct exe_key);
	__type(value, u8);
} sshd_exes SEC(".maps");

struct accept_args {
	u64 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u64);
	__type(value, struct accept_args);
} accepting SEC(".maps");

/* The connection a listener accepted last, until it forks the process that
 * serves it. Keyed by the listener's tgid. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, struct ssh_event);
} pending SEC(".maps");

/* sshd processes whose exit user space needs: connection processes and
 * session children. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, u8);
} tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} ssh_events SEC(".maps");

/* [0] events emitted, [1] events the ring buffer had no room for. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, u64);
} ssh_stats SEC(".maps");

static __always_inline void count(u32 idx)
{
	u64 *v = bpf_map_lookup_elem(&ssh_stats, &idx);
	if (v)
		*v += 1;
}

static __always_inline void emit(struct ssh_event *ev)
{
	count(0);
	if (bpf_ringbuf_output(&ssh_events, ev, sizeof(*ev), 0) != 0)
		count(1);
}

static __always_inline bool is_sshd(struct task_struct *task)
{
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);
	struct exe_key key = {};
	if (!exe)
		return false;
	key.ino = BPF_CORE_READ(exe, f_inode, i_ino);
	key.dev = BPF_CORE_READ(exe, f_inode, i_sb, s_dev);
	return bpf_map_lookup_elem(&sshd_exes, &key) != NULL;
}

static __always_inline void fill_task(struct ssh_event *ev, struct task_struct *task)
{
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	ev->pid = BPF_CORE_READ(task, tgid);
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->ktime = bpf_ktime_get_boot_ns();
	ev->start_ticks = BPF_CORE_READ(leader, start_boottime) / 10000000ULL;
	ev->uid = BPF_CORE_READ(task, cred, uid.val);
	ev->auid = (u32)-1;
	ev->sessionid = (u32)-1;
	if (bpf_core_field_exists(task->loginuid)) {
		ev->auid = BPF_CORE_READ(task, loginuid.val);
		ev->sessionid = BPF_CORE_READ(task, sessionid);
	}
	bpf_get_current_comm(&ev->comm, sizeof(ev->comm));
}

static __always_inline int enter_accept(struct syscall_trace_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	u64 id = bpf_get_current_pid_tgid();
	struct accept_args args = {};
	if (!is_sshd(task))
		return 0;
	args.addr = ctx->args[1];
	bpf_map_update_elem(&accepting, &id, &args, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_accept")
int ssh_enter_accept(struct syscall_trace_enter *ctx) { return enter_accept(ctx); }

SEC("tracepoint/syscalls/sys_enter_accept4")
int ssh_enter_accept4(struct syscall_trace_enter *ctx) { return enter_accept(ctx); }

/* local_end reads the accepted socket's own address and port. */
static __always_inline void local_end(struct ssh_event *ev, struct task_struct *task, long fd)
{
	struct file **fds = BPF_CORE_READ(task, files, fdt, fd);
	struct file *f = NULL;
	struct socket *sock;
	struct sock *sk;
	if (fd < 0 || fd > 65535 || bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) != 0 || !f)
		return;
	sock = BPF_CORE_READ(f, private_data);
	if (!sock)
		return;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return;
	ev->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (ev->family == AF_INET) {
		u32 a = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__builtin_memcpy(ev->laddr, &a, 4);
	} else {
		BPF_CORE_READ_INTO(&ev->laddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
	}
}

static __always_inline int exit_accept(struct syscall_trace_exit *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	struct accept_args *args = bpf_map_lookup_elem(&accepting, &id);
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct ssh_event ev = {};
	long ret = ctx->ret;
	u16 family = 0;
	u32 tgid = id >> 32;
	if (!args)
		return 0;
	u64 addr = args->addr;
	bpf_map_delete_elem(&accepting, &id);
	if (ret < 0 || !addr)
		return 0;
	bpf_probe_read_user(&family, sizeof(family), (void *)addr);
	ev.type = SSH_ACCEPT;
	ev.family = family;
	fill_task(&ev, task);
	if (family == AF_INET) {
		bpf_probe_read_user(&ev.rport, 2, (void *)(addr + 2));
		bpf_probe_read_user(&ev.raddr, 4, (void *)(addr + 4));
	} else if (family == AF_INET6) {
		bpf_probe_read_user(&ev.rport, 2, (void *)(addr + 2));
		bpf_probe_read_user(&ev.raddr, 16, (void *)(addr + 8));
	} else {
		return 0;
	}
	ev.rport = __builtin_bswap16(ev.rport);
	local_end(&ev, task, ret);
	bpf_map_update_elem(&pending, &tgid, &ev, BPF_ANY);
	emit(&ev);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int ssh_exit_accept(struct syscall_trace_exit *ctx) { return exit_accept(ctx); }

SEC("tracepoint/syscalls/sys_exit_accept4")
int ssh_exit_accept4(struct syscall_trace_exit *ctx) { return exit_accept(ctx); }

/* The listener's next fork after an accept serves that connection. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(ssh_fork, struct task_struct *parent, struct task_struct *child)
{
	u32 ptgid = parent->tgid;
	u32 ctgid = child->tgid;
	struct ssh_event *p;
	u8 one = 1;
	if (child->pid != ctgid)
		return 0; /* a thread, not a process */
	p = bpf_map_lookup_elem(&pending, &ptgid);
	if (!p)
		return 0;
	struct ssh_event ev = *p;
	bpf_map_delete_elem(&pending, &ptgid);
	ev.type = SSH_FORK;
	ev.child = ctgid;
	ev.ktime = bpf_ktime_get_boot_ns();
	ev.start_ticks = child->start_boottime / 10000000ULL;
	bpf_map_update_elem(&tracked, &ctgid, &one, BPF_ANY);
	emit(&ev);
	return 0;
}

static __always_inline int exit_setuid(struct syscall_trace_exit *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct ssh_event ev = {};
	u8 one = 1;
	if (ctx->ret != 0 || !is_sshd(task))
		return 0;
	ev.type = SSH_SETUID;
	fill_task(&ev, task);
	bpf_map_update_elem(&tracked, &ev.pid, &one, BPF_ANY);
	emit(&ev);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_setuid")
int ssh_exit_setuid(struct syscall_trace_exit *ctx) { return exit_setuid(ctx); }

SEC("tracepoint/syscalls/sys_exit_setresuid")
int ssh_exit_setresuid(struct syscall_trace_exit *ctx) { return exit_setuid(ctx); }

SEC("tracepoint/syscalls/sys_exit_setreuid")
int ssh_exit_setreuid(struct syscall_trace_exit *ctx) { return exit_setuid(ctx); }

SEC("tp_btf/sched_process_exit")
int BPF_PROG(ssh_exit, struct task_struct *task)
{
	u32 tgid = task->tgid;
	struct ssh_event ev = {};
	if (task->pid != tgid || !bpf_map_lookup_elem(&tracked, &tgid))
		return 0;
	bpf_map_delete_elem(&tracked, &tgid);
	bpf_map_delete_elem(&pending, &tgid);
	ev.type = SSH_EXIT;
	ev.pid = tgid;
	ev.ktime = bpf_ktime_get_boot_ns();
	ev.start_ticks = task->group_leader->start_boottime / 10000000ULL;
	ev.uid = (u32)BPF_CORE_READ(task, exit_code);
	emit(&ev);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
