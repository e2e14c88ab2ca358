-- KFD ioctls per run and command: counts, failures and call-duration percentiles (quantile_disc).
-- Unnamed numbers (ROCm's out-of-tree ones, say) keep their raw `ioctl_nr`. One row per path that
-- saw the calls (`func`: the syscall tracepoint, or a kprobe on kfd_ioctl), so both can be compared.

CREATE VIEW ioctl_summary AS
SELECT
  -- Trace run.
  run_id,
  -- Path that saw the calls: syscalls:sys_enter_ioctl or kfd_ioctl (kprobe).
  func,
  -- AMDKFD_IOC_* name; NULL when the number has no known name.
  ioctl_cmd,
  -- Raw request number, hex.
  printf('0x%08x', ioctl_nr) AS ioctl_nr_hex,
  -- Calls seen.
  count(*) AS calls,
  -- Calls that returned a negative errno.
  count(*) FILTER (WHERE ret < 0) AS failed,
  -- Distinct calling processes.
  count(DISTINCT tgid) AS tgids,
  -- Median duration of the call (quantile_disc: an observed call's).
  quantile_disc(dur_ns, 0.5) AS p50_dur_ns,
  -- 99th percentile duration (quantile_disc).
  quantile_disc(dur_ns, 0.99) AS p99_dur_ns
FROM events
WHERE event = 'kfd_ioctl' AND ioctl_nr IS NOT NULL
GROUP BY run_id, func, ioctl_cmd, ioctl_nr
ORDER BY run_id, func, calls DESC, ioctl_nr;
