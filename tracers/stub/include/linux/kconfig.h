/* stub kconfig (BCC passes `-include include/linux/kconfig.h`): the options BCC's helpers.h checks */
#define CONFIG_BPF_SYSCALL 1
