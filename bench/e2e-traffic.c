// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * The traffic of `make bench-e2e` (bench/e2e.ts): paced senders and a TCP sink,
 * run inside the network namespaces that the bench creates. Never run it
 * against an address outside them.
 *
 *   e2e-traffic udp-send DST PORT NPORTS PPS PAYLOAD
 *       PPS datagrams a second of PAYLOAD bytes to DST, destination ports
 *       PORT .. PORT+NPORTS-1 in turn (NPORTS flows), from one socket, in
 *       sendmmsg() batches.
 *   e2e-traffic tcp-send DST PORT NCONN PPS PAYLOAD
 *       NCONN connections to DST:PORT, then PPS writes a second of PAYLOAD
 *       bytes, one connection after the other. TCP_NODELAY and a payload
 *       below the MSS: every write is one segment, and carries PSH, so that
 *       GRO on the way merges none (tcp_gro_receive() flushes on PSH).
 *   e2e-traffic tcp-sink PORT
 *       Accept every connection on PORT and read and discard what arrives.
 *
 * The senders pace by the clock (CLOCK_MONOTONIC), in bursts of BATCH, so that every
 * configuration the bench compares gets the same offered load. They print
 * {"ready":...} once set up (TCP: every connection established), then wait:
 * SIGUSR1 starts sending, SIGUSR2 pauses, SIGTERM/SIGINT ends the process
 * with one JSON line: what was sent and how often the socket was full (a
 * sender that cannot keep its rate). So the bench's rounds reuse one set of
 * sockets and connections: no handshakes inside a measurement.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Packets go out in bursts of BATCH, as a NIC's interrupt moderation would
 * hand them to the gateway: NAPI polls a burst per wake-up, so the thread's
 * wake-up is not paid per packet. */
#define BATCH 32
#define MAX_PAYLOAD 1400
#define MAX_CONN 65536
#define PACE_SLEEP_NS 20000L   /* nap between batches when ahead of the rate */

static volatile sig_atomic_t stop, running;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		running = 1;
	else if (sig == SIGUSR2)
		running = 0;
	else
		stop = 1;
}

/* Wait while paused; true when sending (re)starts, false to stop. Race-free:
 * the signals are blocked between the check and sigsuspend(). */
static bool wait_running(void)
{
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGUSR2);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, &old);
	while (!running && !stop)
		sigsuspend(&old);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return !stop;
}

static void ready(const char *what, long n)
{
	printf("{\"ready\":\"%s\",\"n\":%ld}\n", what, n);
	fflush(stdout);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "e2e-traffic: %s: %s\n", what, strerror(errno));
	exit(1);
}

static long arg_num(const char *s, long lo, long hi, const char *name)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "e2e-traffic: %s must be %ld..%ld (got %s)\n", name, lo, hi, s);
		exit(2);
	}
	return v;
}

static struct sockaddr_in addr_of(const char *ip, long port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
		fprintf(stderr, "e2e-traffic: not an IPv4 address: %s\n", ip);
		exit(2);
	}
	return a;
}

/* Room for `n` sockets: the soft limit up to the hard one. */
static void raise_nofile(long n)
{
	struct rlimit r;
	if (getrlimit(RLIMIT_NOFILE, &r))
		die("getrlimit(RLIMIT_NOFILE)");
	if (r.rlim_max != RLIM_INFINITY && r.rlim_max < (rlim_t)n + 64) {
		fprintf(stderr, "e2e-traffic: %ld sockets need RLIMIT_NOFILE %ld (hard limit %llu)\n", n, n + 64,
			(unsigned long long)r.rlim_max);
		exit(1);
	}
	r.rlim_cur = r.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &r))
		die("setrlimit(RLIMIT_NOFILE)");
}

/* How many packets are due at `t` since `start` at `pps`. */
static uint64_t due(uint64_t start, uint64_t t, long pps)
{
	return (uint64_t)((t - start) / 1000) * (uint64_t)pps / 1000000ull;
}

static void nap(void)
{
	struct timespec ts = { 0, PACE_SLEEP_NS };
	nanosleep(&ts, NULL);
}

static int udp_send(char **argv)
{
	struct sockaddr_in dst = addr_of(argv[0], arg_num(argv[1], 1, 65535, "PORT"));
	long nports = arg_num(argv[2], 1, 65536, "NPORTS");
	long pps = arg_num(argv[3], 1, 10000000, "PPS");
	long payload = arg_num(argv[4], 1, MAX_PAYLOAD, "PAYLOAD");
	long base = ntohs(dst.sin_port);
	if (base + nports - 1 > 65535) {
		fprintf(stderr, "e2e-traffic: PORT + NPORTS - 1 past 65535\n");
		return 2;
	}
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		die("socket");
	static char buf[MAX_PAYLOAD];
	memset(buf, 0x5a, sizeof(buf));
	struct sockaddr_in names[BATCH];
	struct iovec iov[BATCH];
	struct mmsghdr msgs[BATCH];
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		names[i] = dst;
		iov[i] = (struct iovec){ buf, (size_t)payload };
		msgs[i].msg_hdr = (struct msghdr){ .msg_name = &names[i], .msg_namelen = sizeof(names[i]),
						   .msg_iov = &iov[i], .msg_iovlen = 1 };
	}
	uint64_t sent = 0, full = 0, next_port = 0, total = 0;
	ready("udp", nports);
	while (wait_running()) {
		/* Pace from each start: a pause is not caught up afterwards. */
		uint64_t start = now_ns();
		sent = 0;
		while (running && !stop) {
			uint64_t want = due(start, now_ns(), pps);
			if (want < sent + BATCH) {
				nap();
				continue;
			}
			int n = BATCH;
			for (int i = 0; i < n; i++)
				names[i].sin_port = htons((uint16_t)(base + (next_port + (uint64_t)i) % (uint64_t)nports));
			int r = sendmmsg(fd, msgs, (unsigned)n, 0);
			if (r < 0) {
				if (errno != EAGAIN && errno != ENOBUFS && errno != EINTR)
					die("sendmmsg");
				r = 0;
			}
			next_port = (next_port + (uint64_t)r) % (uint64_t)nports;
			total += (uint64_t)r;
			sent += (uint64_t)r;
			if (r < n) {
				full++;
				sent = want;   /* no catching up: the rate is the rate */
			}
		}
	}
	printf("{\"sent\":%llu,\"full\":%llu}\n", (unsigned long long)total, (unsigned long long)full);
	return 0;
}

static int tcp_send(char **argv)
{
	struct sockaddr_in dst = addr_of(argv[0], arg_num(argv[1], 1, 65535, "PORT"));
	long nconn = arg_num(argv[2], 1, MAX_CONN, "NCONN");
	long pps = arg_num(argv[3], 1, 10000000, "PPS");
	long payload = arg_num(argv[4], 1, MAX_PAYLOAD, "PAYLOAD");
	raise_nofile(nconn);
	int *fds = calloc((size_t)nconn, sizeof(int));
	if (!fds)
		die("calloc");
	int ep = epoll_create1(0);
	if (ep < 0)
		die("epoll_create1");
	/* Connect all, non-blocking, a few hundred in flight at a time. */
	long opened = 0, connected = 0, inflight = 0;
	const long window = 256;
	uint64_t deadline = now_ns() + 60ull * 1000000000ull;
	while (connected < nconn && !stop) {
		while (opened < nconn && inflight < window) {
			int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
			if (fd < 0)
				die("socket");
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) && errno != EINPROGRESS)
				die("connect");
			struct epoll_event ev = { .events = EPOLLOUT, .data.u64 = (uint64_t)opened };
			if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
				die("epoll_ctl");
			fds[opened++] = fd;
			inflight++;
		}
		struct epoll_event evs[256];
		int n = epoll_wait(ep, evs, 256, 1000);
		if (n < 0 && errno != EINTR)
			die("epoll_wait");
		for (int i = 0; i < n; i++) {
			int fd = fds[evs[i].data.u64];
			int err = 0;
			socklen_t len = sizeof(err);
			getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
			if (err) {
				errno = err;
				die("connect (completion)");
			}
			epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
			connected++;
			inflight--;
		}
		if (now_ns() > deadline) {
			fprintf(stderr, "e2e-traffic: %ld of %ld connections after 60 s\n", connected, nconn);
			return 1;
		}
	}
	static char buf[MAX_PAYLOAD];
	memset(buf, 0x5a, sizeof(buf));
	uint64_t sent = 0, full = 0, next = 0, total = 0;
	ready("tcp", connected);
	while (wait_running()) {
		uint64_t start = now_ns();
		sent = 0;
		while (running && !stop) {
			uint64_t want = due(start, now_ns(), pps);
			if (want < sent + BATCH) {
				nap();
				continue;
			}
			uint64_t n = BATCH;
			for (uint64_t i = 0; i < n; i++) {
				ssize_t r = send(fds[next], buf, (size_t)payload, MSG_DONTWAIT | MSG_NOSIGNAL);
				if (r < 0 && errno != EAGAIN && errno != EINTR)
					die("send");
				if (r < 0)
					full++;
				else
					total++;
				next = (next + 1) % (uint64_t)nconn;
			}
			sent += n;
		}
	}
	printf("{\"sent\":%llu,\"full\":%llu,\"connections\":%ld}\n", (unsigned long long)total,
	       (unsigned long long)full, connected);
	return 0;
}

static int tcp_sink(char **argv)
{
	struct sockaddr_in any = { .sin_family = AF_INET, .sin_port = htons((uint16_t)arg_num(argv[0], 1, 65535, "PORT")) };
	raise_nofile(1);  /* as many as the hard limit allows */
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (lfd < 0)
		die("socket");
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&any, sizeof(any)))
		die("bind");
	if (listen(lfd, 4096))
		die("listen");
	int ep = epoll_create1(0);
	if (ep < 0)
		die("epoll_create1");
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev))
		die("epoll_ctl");
	ready("sink", ntohs(any.sin_port));
	fflush(stdout);
	static char buf[65536];
	unsigned long long bytes = 0, conns = 0;
	while (!stop) {
		struct epoll_event evs[256];
		int n = epoll_wait(ep, evs, 256, 200);
		if (n < 0 && errno != EINTR)
			die("epoll_wait");
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == lfd) {
				int c;
				while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					struct epoll_event cev = { .events = EPOLLIN, .data.fd = c };
					if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev))
						die("epoll_ctl");
					conns++;
				}
				continue;
			}
			ssize_t r;
			while ((r = read(fd, buf, sizeof(buf))) > 0)
				bytes += (unsigned long long)r;
			if (r == 0)
				close(fd);
		}
	}
	printf("{\"bytes\":%llu,\"connections\":%llu}\n", bytes, conns);
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (argc == 7 && !strcmp(argv[1], "udp-send"))
		return udp_send(argv + 2);
	if (argc == 7 && !strcmp(argv[1], "tcp-send"))
		return tcp_send(argv + 2);
	if (argc == 3 && !strcmp(argv[1], "tcp-sink"))
		return tcp_sink(argv + 2);
	fprintf(stderr, "usage: e2e-traffic udp-send DST PORT NPORTS PPS PAYLOAD\n"
			"       e2e-traffic tcp-send DST PORT NCONN PPS PAYLOAD\n"
			"       e2e-traffic tcp-sink PORT\n");
	return 2;
}
