-- What each process asked KFD to do with queues, from the ioctl path: queue creations by type and
-- priority, destructions, and debugger suspend/resume calls with their target process. Counts
-- calls whatever their result (`failed` says how many returned an errno), so it works on a host
-- without a GPU too. Each call counts once: a run recorded on the syscall tracepoints (func syscalls:*,
-- `--probes ioctl` or a kernel without kprobes) counts those rows, and a bare kfd_ioctl kprobe beside
-- them (older recordings) would count the same call twice; a run recorded with the default kprobe path
-- counts its decoded kfd_ioctl rows.
-- DBG_TRAP queue operations are named through the prelude's `dbg_trap_ops` lookup (one definition).

CREATE VIEW ioctl_queue_requests AS
SELECT
  -- Trace run.
  run_id,
  -- Calling process.
  tgid,
  -- Its command name.
  any_value(comm) AS comm,
  -- CREATE_QUEUE calls.
  count(*) FILTER (WHERE ioctl_cmd = 'AMDKFD_IOC_CREATE_QUEUE') AS create_calls,
  -- CREATE_QUEUE calls per requested queue type, e.g. {compute_aql: 2, sdma: 1}.
  histogram(queue_type) FILTER (WHERE ioctl_cmd = 'AMDKFD_IOC_CREATE_QUEUE') AS create_types,
  -- Distinct queue priorities requested (0..15).
  list_sort(list_distinct(list(priority) FILTER (WHERE ioctl_cmd = 'AMDKFD_IOC_CREATE_QUEUE'))) AS priorities,
  -- DESTROY_QUEUE calls.
  count(*) FILTER (WHERE ioctl_cmd = 'AMDKFD_IOC_DESTROY_QUEUE') AS destroy_calls,
  -- DBG_TRAP suspend calls (upstream op 6; ROCm's pre-upstream op 3 on 0xc0284b82).
  count(*) FILTER (WHERE o.op_name = 'suspend_queues') AS suspend_calls,
  -- DBG_TRAP resume calls (upstream op 7; ROCm op 4).
  count(*) FILTER (WHERE o.op_name = 'resume_queues') AS resume_calls,
  -- Processes targeted by this process's DBG_TRAP calls.
  list_sort(list_distinct(list(target_pid) FILTER (WHERE ioctl_nr & 255 IN (SELECT DISTINCT ioctl_nr_low FROM dbg_trap_ops)))) AS dbg_targets,
  -- Calls that returned an errno.
  count(*) FILTER (WHERE ret < 0) AS failed
FROM events
LEFT JOIN dbg_trap_ops o ON o.ioctl_nr_low = events.ioctl_nr & 255 AND o.dbg_op = events.dbg_op
WHERE event = 'kfd_ioctl' AND ioctl_nr IS NOT NULL
  AND (func LIKE 'syscalls:%'
       OR (func = 'kfd_ioctl' AND run_id NOT IN (SELECT run_id FROM events WHERE event = 'kfd_ioctl' AND func LIKE 'syscalls:%')))
GROUP BY run_id, tgid
ORDER BY run_id, tgid;
