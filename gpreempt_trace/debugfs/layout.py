"""Register and MQD word positions the decoders read (facts from the kernel sources, see docs/exp01.md).

HQD register dumps: `kgd_gfx_v9_hqd_dump` (amdgpu_amdkfd_gfx_v9.c, 6.1 .. 6.18) reads the 56 registers
mmCP_MQD_BASE_ADDR (0x1245 in the GC block) .. mmCP_HQD_PQ_WPTR_HI and prints each as `(reg << 2)`,
value. `kgd_gfx_v9_hqd_load` writes the same range from `&v9_mqd.cp_mqd_base_addr_lo` (dword 128), so
register index i of a CP HQD dump is v9_mqd dword 128 + i and carries the same name.

SDMA RLC dumps (`kgd_hqd_sdma_dump` / `kgd_gfx_v9_4_3_hqd_sdma_dump`) print four contiguous ranges
RB_CNTL..DOORBELL (19), STATUS..CSA_ADDR_HI (6), IB_SUB_REMAIN..MINOR_PTR_UPDATE (7), MIDCMD_* (10 or 12),
in the same order as struct v9_sdma_mqd, so they are decoded by position in the dump.
"""
from __future__ import annotations

# -- struct v9_mqd (drivers/gpu/drm/amd/include/v9_structs.h), dword index -> name ----------------
V9_MQD_DWORDS = 512  # sizeof(struct v9_mqd) == 2048 bytes == 64 rows of seq_hex_dump(32 bytes)
V9_MQD_HEADER = 0xC0310800  # init_mqd() in kfd_mqd_manager_v9.c sets m->header to this
MQD = {
    "header": 0,
    "compute_current_logic_xcc_id": 39,  # GC 9.4.3 union member (offset 0x27)
    "cp_mqd_base_addr_lo": 128,
    "cp_mqd_base_addr_hi": 129,
    "cp_hqd_active": 130,
    "cp_hqd_vmid": 131,
    "cp_hqd_persistent_state": 132,
    "cp_hqd_pipe_priority": 133,
    "cp_hqd_queue_priority": 134,
    "cp_hqd_quantum": 135,
    "cp_hqd_pq_base_lo": 136,
    "cp_hqd_pq_base_hi": 137,
    "cp_hqd_pq_doorbell_control": 143,
    "cp_hqd_pq_control": 145,
    "cp_mqd_stride_size": 226,  # GC 9.4.3 union member (offset 0xE2)
}
HQD_MQD_FIRST_DWORD = MQD["cp_mqd_base_addr_lo"]

# -- CP HQD register dump: index from mmCP_MQD_BASE_ADDR ----------------------------------------
CP_HQD_N_REGS = 56
CP_MQD_BASE_ADDR_REG = 0x1245  # GC register number (dword) before the SOC15 instance base is added
CP_HQD = {name.upper(): dw - HQD_MQD_FIRST_DWORD for name, dw in MQD.items() if dw >= HQD_MQD_FIRST_DWORD and dw < HQD_MQD_FIRST_DWORD + CP_HQD_N_REGS}
# e.g. CP_HQD["CP_HQD_ACTIVE"] == 2 (register 0x1247), CP_HQD["CP_HQD_PQ_DOORBELL_CONTROL"] == 15

# field masks (gc_9_0_sh_mask.h; the doorbell ones are also used by kgd_gfx_v9_get_cu_occupancy)
CP_HQD_ACTIVE__ACTIVE_MASK = 0x1
CP_HQD_VMID__VMID_MASK = 0xF
DOORBELL_OFFSET_MASK = 0x0FFFFFFC  # CP_HQD_PQ_DOORBELL_CONTROL__DOORBELL_OFFSET_MASK
DOORBELL_OFFSET_SHIFT = 2
DOORBELL_EN_MASK = 0x40000000

# -- struct v9_sdma_mqd, dword index -> name (also the SDMA RLC dump order) -----------------------
V9_SDMA_MQD_DWORDS = 130  # 128 registers/reserved + sdma_engine_id + sdma_queue_id = 520 bytes
SDMA = {
    "sdmax_rlcx_rb_cntl": 0,
    "sdmax_rlcx_rb_base": 1,
    "sdmax_rlcx_rb_base_hi": 2,
    "sdmax_rlcx_doorbell": 18,
    "sdmax_rlcx_doorbell_offset": 22,
    "sdma_engine_id": 128,
    "sdma_queue_id": 129,
}
SDMA_RB_ENABLE_MASK = 0x1  # SDMA0_RLC0_RB_CNTL__RB_ENABLE
SDMA_DOORBELL_OFFSET_MASK = 0x0FFFFFFC  # SDMA0_RLC0_DOORBELL_OFFSET__OFFSET (shift 2)

# -- PM4 type-3 packets in the runlist IB (kfd_pm4_headers_ai.h, kfd_pm4_opcodes.h) ---------------
PM4_OPCODES = {0xA0: "SET_RESOURCES", 0xA1: "MAP_PROCESS", 0xA2: "MAP_QUEUES", 0xA3: "UNMAP_QUEUES", 0xA4: "QUERY_STATUS", 0xA5: "RUN_LIST"}
MAP_QUEUES_ENGINES = {0: "compute", 2: "sdma0", 3: "sdma1"}
MAP_QUEUES_QUEUE_TYPES = {0: "normal_compute", 1: "debug_interface_queue", 2: "normal_latency_static", 3: "low_latency_static"}
