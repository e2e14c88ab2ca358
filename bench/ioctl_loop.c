/* Issue KFD-numbered ioctls (CREATE_QUEUE, uapi 6.1 layout) on a device as fast as possible, or paced
 * to RATE calls/s; prints "calls elapsed_ns". Built by bench/bench_recorder.py with the system cc.
 *   ioctl_loop PATH CALLS [RATE] */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <time.h>

struct create_queue_args {
	uint64_t ring_base_address, write_pointer_address, read_pointer_address, doorbell_offset;
	uint32_t ring_size, gpu_id, queue_type, queue_percentage, queue_priority, queue_id;
	uint64_t eop_buffer_address, eop_buffer_size, ctx_save_restore_address;
	uint32_t ctx_save_restore_size, ctl_stack_size;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	int fd = open(argv[1], O_RDWR);
	if (fd < 0)
		return 1;
	long calls = atol(argv[2]);
	double rate = argc > 3 ? atof(argv[3]) : 0;
	struct create_queue_args a = {.ring_base_address = 0x100000, .ring_size = 4096, .gpu_id = 1, .queue_type = 2,
				      .queue_percentage = 100, .queue_priority = 7};
	unsigned long cmd = 0xC0584B02; /* AMDKFD_IOC_CREATE_QUEUE */
	uint64_t t0 = now_ns();
	for (long i = 0; i < calls; i++) {
		if (rate > 0 && (i % 64) == 0) {
			uint64_t due = t0 + (uint64_t)(i / rate * 1e9);
			uint64_t t;
			while ((t = now_ns()) < due) {
				if (due - t > 200000) {
					struct timespec d = {0, (long)(due - t - 100000)};
					nanosleep(&d, NULL);
				}
			}
		}
		a.queue_id = (uint32_t)i;
		ioctl(fd, cmd, &a);
	}
	printf("%ld %llu\n", calls, (unsigned long long)(now_ns() - t0));
	return 0;
}
