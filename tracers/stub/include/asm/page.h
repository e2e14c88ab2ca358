/* stub: BPF_RINGBUF_OUTPUT sizes the ring in pages */
#define PAGE_SHIFT 12
#define PAGE_SIZE (1UL << PAGE_SHIFT)
