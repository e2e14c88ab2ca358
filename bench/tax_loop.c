/* The per-call cost of a syscall: BATCHES batches of CALLS calls, one line per batch: "ns_per_call".
 * Built by bench/bench_tax.py with the system cc.
 *   tax_loop getppid CALLS BATCHES
 *   tax_loop ioctl PATH CALLS BATCHES   (AMDKFD_IOC_GET_VERSION on PATH: real KFD answers 0, another device ENOTTY) */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	int is_ioctl = argc == 5 && strcmp(argv[1], "ioctl") == 0;
	if (!is_ioctl && !(argc == 4 && strcmp(argv[1], "getppid") == 0))
		return 2;
	int fd = -1;
	if (is_ioctl && (fd = open(argv[2], O_RDWR)) < 0) {
		perror(argv[2]);
		return 1;
	}
	long calls = atol(argv[argc - 2]), batches = atol(argv[argc - 1]);
	uint32_t ver[2];
	for (long b = 0; b < batches; b++) {
		uint64_t t0 = now_ns();
		if (is_ioctl)
			for (long i = 0; i < calls; i++)
				ioctl(fd, 0x80084B01UL, ver); /* AMDKFD_IOC_GET_VERSION */
		else
			for (long i = 0; i < calls; i++)
				getppid();
		printf("%.1f\n", (double)(now_ns() - t0) / calls);
	}
	return 0;
}
