"""Test data, one place: everything the tests use to make traces or KFD traffic.

- traces.py: tiny hand-checkable traces built through the real record path (synthetic records →
  decode.EventDecoder → segment writer), with exact values the SQL tests assert;
- ioctl_calls.py: KFD ioctl numbers with known argument structs (gpreempt_trace.contracts.uapi layouts) issued on
  a device (/dev/null on this VM), so the recorder's decoded fields can be predicted;
- lab_kfd_calls.py: real KFD calls in the lab guest (GET_VERSION, CREATE_QUEUE, and with --debugger a
  RUNTIME_ENABLE target plus a ptrace-parent DBG_TRAP debugger);
- lab_preempt_scenarios.py: the controller's scenarios against the real 6.12 KFD in the lab guest;
- control_child.py: a real controller process (real ptrace, scripted KFD ioctls) for the safety tests.
The larger model of KFD with ground truth is gpreempt_trace.synthetic (a user-facing generator).
"""
