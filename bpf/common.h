/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Shared by nodeward's BPF programs: event kinds, loss counters, the ring
 * buffer every program writes to, and small CO-RE helpers. */
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#define TASK_COMM_LEN 16

enum event_type {
	EVENT_EXEC = 1,
	EVENT_EXIT = 2,
	EVENT_FORK = 3,
};

/* Indices of the per-CPU counters in the stats map. SEEN counts every event
 * a program tried to emit, LOST those the ring buffer had no room for. */
enum stat_index {
	STAT_EXEC_SEEN = 0,
	STAT_EXEC_LOST = 1,
	STAT_EXIT_SEEN = 2,
	STAT_EXIT_LOST = 3,
	STAT_FORK_SEEN = 4,
	STAT_FORK_LOST = 5,
	STAT_MAX = 8,
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* user space may resize before load */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, u32);
	__type(value, u64);
} stats SEC(".maps");

/* Set by the loader: trace only tasks whose cgroup v2 id is this one (0 = all). */
const volatile u64 filter_cgroup_id = 0;

/* Set by the loader: wake the reader only once this many bytes wait in the
 * ring buffer (0: on every event). A storm then costs the reader a wake-up
 * per batch instead of per event; it polls for the rest on a short timer. */
const volatile u64 wakeup_bytes = 0;

static __always_inline void stat_inc(u32 idx)
{
	u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

static __always_inline bool filtered_out(void)
{
	return filter_cgroup_id != 0 && bpf_get_current_cgroup_id() != filter_cgroup_id;
}

/* emit copies size bytes of ev to the ring buffer, counting the attempt and
 * any failure: a full ring buffer is never silent. */
static __always_inline void emit(void *ev, u64 size, u32 seen_idx)
{
	u64 flags = 0;
	stat_inc(seen_idx);
	if (wakeup_bytes)
		flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) + size >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_output(&events, ev, size, flags) != 0)
		stat_inc(seen_idx + 1);
}

/* start_ticks is the process start in clock ticks since boot (USER_HZ = 100),
 * exactly field 22 of /proc/PID/stat, so that ids made from procfs at
 * start-up and from events agree. */
static __always_inline u64 start_ticks(struct task_struct *leader)
{
	return BPF_CORE_READ(leader, start_boottime) / 10000000ULL;
}
