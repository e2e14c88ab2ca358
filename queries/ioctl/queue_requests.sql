-- What each process asked KFD to do with queues, from the ioctl path: queue creations by type and
-- priority, destructions, and debugger suspend/resume calls with their target process. Counts
-- calls whatever their result (`failed` says how many returned an errno), so it works on a host
-- without a GPU too. Only rows of the ioctl tracepoint path (func syscalls:*) count: it is the path
-- that decodes the arguments, and a kfd_ioctl kprobe seeing the same call would count it twice.

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
  count(*) FILTER (WHERE (ioctl_nr & 255 = 38 AND dbg_op = 6) OR (ioctl_nr & 255 = 130 AND dbg_op = 3)) AS suspend_calls,
  -- DBG_TRAP resume calls (upstream op 7; ROCm op 4).
  count(*) FILTER (WHERE (ioctl_nr & 255 = 38 AND dbg_op = 7) OR (ioctl_nr & 255 = 130 AND dbg_op = 4)) AS resume_calls,
  -- Processes targeted by this process's DBG_TRAP calls.
  list_sort(list_distinct(list(target_pid) FILTER (WHERE ioctl_nr & 255 IN (38, 130)))) AS dbg_targets,
  -- Calls that returned an errno.
  count(*) FILTER (WHERE ret < 0) AS failed
FROM events
WHERE event = 'kfd_ioctl' AND ioctl_nr IS NOT NULL AND func LIKE 'syscalls:%'
GROUP BY run_id, tgid
ORDER BY run_id, tgid;
