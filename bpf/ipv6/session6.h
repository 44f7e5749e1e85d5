/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * IPv6 sessions (SPEC 9, 4): arming on a trigger packet with the semantics
 * of pt_arm(), the per-host limit over pt6_host_sessions (the IPv4 code's
 * pt_host_take_in() / pt_host_release_in() on the other map), and the walks
 * of pt6_sessions that remove what is over: the data path's own when the
 * table or a host is full, and the daemon's sweep (pt_sweep).
 *
 * Keys: peer mode `any`: (rule, host, ::): IPv6 hosts do not conflict, each
 * holds its own session. Mode `contacted`: (rule, ::, peer), the owner in the
 * value, and `conflict` first/last decides between hosts as in IPv4.
 *
 * Included by porttrig.bpf.c after the IPv4 session code it shares.
 */
#ifndef PORTTRIG_SESSION6_H
#define PORTTRIG_SESSION6_H

#include "addr6.h"
#include "parse6.h"

/* When the data path last walked pt6_sessions / pt6_flows to reclaim them
 * (PT_RECLAIM_SESSIONS, PT_RECLAIM_FLOWS), as pt_reclaim_state does for
 * IPv4. Global data, not pinned: only a rate limit, which a new object
 * starts afresh (at most one early walk after a daemon restart). */
struct pt_reclaim pt6_reclaim[PT_RECLAIM__COUNT] SEC(".data.reclaim6") = {};

/* The context of a walk of pt6_sessions or pt6_flows (struct pt_reclaim_ctx
 * for IPv6). */
struct pt6_reclaim_ctx {
	__u64 now;
	__u64 next_ns;      /* earliest deadline of a live session (or flow) seen; 0 = none */
	__u64 host_next_ns; /* the same among `host`'s sessions */
	struct pt_reclaim *st;  /* the scan's budget; NULL: no budget */
	__be32 host[4];     /* the host whose live sessions are counted (by_host) */
	__u32 by_host;      /* 1: count `host`'s sessions only */
	__u32 live;
	__u32 freed;
	__u32 sweep;        /* PT_SWEEP_* of the daemon's sweep; 0 = data path */
	__u32 seen;
	__u32 expired;
	__u32 closed;
	__u32 removed;
	__u32 fixed;
	__u32 hosts;
};

/* The daemon's sweep saw a live session of rule `rid` held by `host`. */
static __always_inline void pt6_sweep_count_live(__u32 rid, const struct pt6_addr *host, bool recount)
{
	if (rid < PT_MAX_RULES)
		pt_sweep_data.live6[rid]++;
	if (!recount)
		return;
	struct pt_host *h = bpf_map_lookup_elem(&pt6_host_sessions, host);
	if (h) {
		__sync_fetch_and_add(&h->recount, 1);
	} else {
		struct pt_host one = { .sessions = 0, .recount = 1 };
		bpf_map_update_elem(&pt6_host_sessions, host, &one, BPF_NOEXIST);
	}
}

/* bpf_for_each_map_elem() callback over pt6_sessions: pt_reclaim_session_cb()
 * for IPv6. */
static long pt6_reclaim_session_cb(struct bpf_map *map, const struct pt6_session_key *k,
				   struct pt6_session *s, struct pt6_reclaim_ctx *c)
{
	struct pt6_session_key key = *k;
	struct pt6_addr host;
	pt6_copy(host.a, s->host);
	__u64 last = s->last_seen_ns;
	__u32 rid = key.rule;
	struct pt_rule *r = bpf_map_lookup_elem(&pt_rules, &rid);
	__u32 rflags = r ? r->flags : 0;
	__u64 idle = r ? r->idle_timeout_ns : 0;
	c->seen++;
	if ((rflags & PT_RULE_ENABLED) && pt_live_until(last, idle, c->now)) {
		__u64 until = last + idle;
		if (!c->next_ns || (__s64)(until - c->next_ns) < 0)
			c->next_ns = until;
		if (!c->by_host) {
			c->live++;
			if (c->sweep)
				pt6_sweep_count_live(rid, &host, c->sweep & PT_SWEEP_RECOUNT);
		} else if (pt6_eq(host.a, c->host)) {
			if (!c->host_next_ns || (__s64)(until - c->host_next_ns) < 0)
				c->host_next_ns = until;
			c->live++;
		}
		return 0;
	}
	if (bpf_map_delete_elem(&pt6_sessions, &key))
		return 0;
	if (c->sweep & PT_SWEEP_RECOUNT) {
		struct pt_host *h = bpf_map_lookup_elem(&pt6_host_sessions, &host);
		if (h && h->sessions > 0)
			__sync_fetch_and_sub(&h->sessions, 1);
	} else {
		pt_host_release_in(&pt6_host_sessions, &host);
	}
	if (rflags & PT_RULE_ENABLED) {
		pt_count(PT_F_IPV6, rid, PT_RC_SESSIONS_EXPIRED);
		c->expired++;
	} else {
		c->closed++;
	}
	return pt_reclaim_spend(c->st, &c->freed);
}

/* The recount's end over pt6_host_sessions (pt_recount_apply_cb() for IPv6). */
static long pt6_recount_apply_cb(struct bpf_map *map, const struct pt6_addr *k, struct pt_host *h,
				 struct pt6_reclaim_ctx *c)
{
	struct pt6_addr host = *k;
	return pt_recount_apply(&pt6_host_sessions, &host, h, &c->hosts, &c->fixed);
}

/* pt6_sessions is full: pt_reclaim_sessions() for IPv6. */
static __noinline bool pt6_reclaim_sessions(__u64 now)
{
	struct pt_reclaim *st = pt_reclaim_due_st(&pt6_reclaim[PT_RECLAIM_SESSIONS], PT_RECLAIM_SESSIONS, now);
	if (!st)
		return false;
	struct pt6_reclaim_ctx c = { .now = now, .st = st };
	bpf_for_each_map_elem(&pt6_sessions, pt6_reclaim_session_cb, &c, 0);
	st->next_ns = c.next_ns;
	return c.freed;
}

/* A host at sessions_per_host whose earliest deadline has passed:
 * pt_reclaim_host() for IPv6. */
static __noinline void pt6_reclaim_host(const struct pt6_addr *host, __u64 now)
{
	struct pt_reclaim *st = &pt6_reclaim[PT_RECLAIM_SESSIONS];
	__u64 last = st->last_ns;
	if (last && (__s64)(now - last) < (__s64)PT_RECLAIM_GAP_NS)
		return;
	st->last_ns = now;
	st->freed = 0;
	st->more = 0;
	struct pt6_reclaim_ctx c = { .now = now, .by_host = 1 };
	pt6_copy(c.host, host->a);
	bpf_for_each_map_elem(&pt6_sessions, pt6_reclaim_session_cb, &c, 0);
	st->next_ns = c.next_ns;
	struct pt_host *h = bpf_map_lookup_elem(&pt6_host_sessions, host);
	if (!h)
		return;
	h->sessions = c.live;
	h->recheck_ns = c.host_next_ns;
}

/* pt_host_take() for IPv6: one session slot of `host`. */
static __always_inline enum pt_take pt6_host_take(const struct pt6_addr *host, __u32 limit, __u64 now, __u64 until)
{
	enum pt_take t = pt_host_take_in(&pt6_host_sessions, host, limit, until);
	if (t == PT_TAKE_LIMIT) {
		struct pt_host *h = bpf_map_lookup_elem(&pt6_host_sessions, host);
		if (!h || (h->recheck_ns && (__s64)(now - h->recheck_ns) <= 0))
			return t;
		pt6_reclaim_host(host, now);
	} else if (t == PT_TAKE_FULL) {
		if (!pt6_reclaim_sessions(now))
			return t;
	} else {
		return t;
	}
	return pt_host_take_in(&pt6_host_sessions, host, limit, until);
}

/*
 * Open or refresh the IPv6 session of rule `id` for the trigger packet `p`
 * (SPEC 4.1-4.6 per family): pt_arm() over pt6_sessions. In mode `any` the
 * key holds the host, so another host never meets this session; in mode
 * `contacted` the peer, and a live session of another host is a conflict.
 * A global function: the verifier checks it once, not at each of the
 * PT_TRIGGER_SLOTS call sites with its reclaim walks (static, it doubled
 * the instructions the verifier processes for pt_lan_ingress).
 */
__noinline int pt6_arm(__u32 id, const struct pt6_pkt *p, __u32 ifindex, __u32 limit, __u64 now)
{
	if (!p)
		return 0;
	struct pt_rule *rule = bpf_map_lookup_elem(&pt_rules, &id);
	if (!rule)
		return 0;
	__u32 flags = rule->flags;
	__u64 idle = rule->idle_timeout_ns;
	if (!(flags & PT_RULE_ENABLED))
		return 0;

	struct pt6_session_key key = { .rule = id };
	if (flags & PT_RULE_PEER_CONTACTED)
		pt6_copy(key.peer, p->daddr);
	else
		pt6_copy(key.host, p->saddr);
	struct pt6_addr me;
	pt6_copy(me.a, p->saddr);
	struct pt6_addr old_host = {};
	bool has_old = false;
	bool keep_slot = false;

	struct pt6_session *s = bpf_map_lookup_elem(&pt6_sessions, &key);
	if (s) {
		struct pt6_addr s_host;
		pt6_copy(s_host.a, s->host);
		bool mine = pt6_eq(s_host.a, me.a);
		if (pt_live_until(s->last_seen_ns, idle, now)) {
			if (mine) {
				pt_touch(&s->last_seen_ns, now);
				if (s->ifindex != ifindex)
					s->ifindex = ifindex;
				pt_count(PT_F_IPV6, id, PT_RC_TRIGGER_HITS);
				return 0;
			}
			if (!(flags & PT_RULE_CONFLICT_LAST)) {
				pt_count(PT_F_IPV6, id, PT_RC_TRIGGER_HITS);
				pt_count(PT_F_IPV6, id, PT_RC_REFUSED_CONFLICT);
				return 0;
			}
			old_host = s_host;
			has_old = true;
		} else if (mine) {
			keep_slot = true;
		} else {
			old_host = s_host;
			has_old = true;
		}
	}
	pt_count(PT_F_IPV6, id, PT_RC_TRIGGER_HITS);

	if (!keep_slot) {
		enum pt_take t = pt6_host_take(&me, limit, now, now + idle);
		if (t != PT_TAKE_OK) {
			pt_count(PT_F_IPV6, id, t == PT_TAKE_LIMIT ? PT_RC_REFUSED_HOST_LIMIT : PT_RC_REFUSED_MAP_FULL);
			return 0;
		}
	}
	if (has_old) {
		struct pt6_session *cur = bpf_map_lookup_elem(&pt6_sessions, &key);
		if (!cur || !pt6_eq(cur->host, old_host.a))
			has_old = false;
	}
	struct pt6_session fresh = { .opened_ns = now, .last_seen_ns = now, .ifindex = ifindex };
	pt6_copy(fresh.host, me.a);
	long err = bpf_map_update_elem(&pt6_sessions, &key, &fresh, BPF_ANY);
	if (err == -E2BIG && pt6_reclaim_sessions(now))
		err = bpf_map_update_elem(&pt6_sessions, &key, &fresh, BPF_ANY);
	if (err) {
		if (!keep_slot)
			pt_host_release_in(&pt6_host_sessions, &me);
		pt_count(PT_F_IPV6, id, PT_RC_REFUSED_MAP_FULL);
		return 0;
	}
	if (has_old)
		pt_host_release_in(&pt6_host_sessions, &old_host);
	pt_count(PT_F_IPV6, id, PT_RC_SESSIONS_OPENED);
	return 0;
}

/* SPEC 9, 4.1: a LAN host's trigger, from its own global or unique-local
 * address inside a LAN prefix (never the gateway's, nor the prefix's
 * subnet-router anycast address: pt6_lan_host()), to a remote that is
 * neither inside the LAN, nor the gateway's, nor link-local or multicast. */
static __always_inline bool pt6_trigger_addrs_ok(const struct pt6_pkt *p)
{
	if (!pt6_global_or_ula(p->saddr) || pt6_martian(p->daddr))
		return false;
	if (!pt6_lan_host(p->saddr) || pt6_lan_addr(p->daddr))
		return false;
	return !pt6_local_addr(p->saddr) && !pt6_local_addr(p->daddr);
}

/* The LAN packet `p` to a trigger port arms the port's rules: pt_lan_trigger()
 * for IPv6. Returns the packet's verdict as a trigger. */
static __always_inline enum pt_verdict pt6_lan_trigger(struct __sk_buff *skb, const struct pt6_pkt *p)
{
	struct pt_port *dport = pt_port_slot(p->proto, p->dport);
	if (!dport || !dport->trigger[0])
		return PT_V_PASS;
	__u32 zero = 0;
	struct pt_config *cfg = bpf_map_lookup_elem(&pt_config, &zero);
	if (!cfg || !pt6_trigger_addrs_ok(p))
		return PT_V_PASS;
	__u64 now = pt_now();
	__u32 ifindex = skb->ifindex;
#pragma unroll
	for (int i = 0; i < PT_TRIGGER_SLOTS; i++) {
		__u32 id = dport->trigger[i];
		if (!id)
			break;
		pt6_arm(id, p, ifindex, cfg->sessions_per_host, now);
	}
	return PT_V_TRIGGER;
}

#endif /* PORTTRIG_SESSION6_H */
