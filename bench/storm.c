// storm: an exec storm for bench/exec.sh.
//
//   storm fork|vfork N WORKERS PROG TAG
//
// WORKERS processes share N iterations; each iteration forks (or vforks),
// the child execs PROG with the argument TAG-i, and the worker waits for it.
// Prints the wall time of the whole storm in nanoseconds, the number of
// children that failed, and the CPU time (user + system) the storm's
// processes used, in nanoseconds: on a busy machine the CPU time is the
// steadier measure, since waiting for a CPU costs wall time but no CPU.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/wait.h>

extern char **environ;

static int worker(int vfork_mode, long n, long workers, long w, char *prog, const char *tag)
{
	char arg[128];
	char *av[] = {prog, arg, NULL};
	int failed = 0;
	for (long i = w; i < n; i += workers) {
		snprintf(arg, sizeof(arg), "%s-%ld", tag, i);
		pid_t pid = vfork_mode ? vfork() : fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			execve(prog, av, environ);
			_exit(127);
		}
		int st;
		if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			failed++;
	}
	return failed > 255 ? 255 : failed;
}

int main(int argc, char **argv)
{
	if (argc != 6 || (strcmp(argv[1], "fork") && strcmp(argv[1], "vfork"))) {
		fprintf(stderr, "usage: storm fork|vfork N WORKERS PROG TAG\n");
		return 2;
	}
	int vfork_mode = strcmp(argv[1], "vfork") == 0;
	long n = atol(argv[2]), workers = atol(argv[3]);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long w = 0; w < workers; w++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0)
			_exit(worker(vfork_mode, n, workers, w, argv[4], argv[5]));
	}
	int failed = 0, st;
	while (wait(&st) > 0)
		failed += WIFEXITED(st) ? WEXITSTATUS(st) : 1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long long ns = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
	/* All descendants were waited for, so RUSAGE_CHILDREN covers them. */
	struct rusage ru;
	getrusage(RUSAGE_CHILDREN, &ru);
	long long cpu = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
			(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
	printf("%lld %d %lld\n", ns, failed, cpu);
	return failed != 0;
}
