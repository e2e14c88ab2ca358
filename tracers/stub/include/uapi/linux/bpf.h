/* stub: BCC includes its own uapi bpf.h (/virtual/include/bcc/bpf.h) first; same include guard */
