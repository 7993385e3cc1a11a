"""The ptxas report parser and the occupancy arithmetic that the budget checks rely on."""

from ptxas import H100, Usage, blocks_per_sm, occupancy, parse_ptxas_log, waves

LOG = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_confidence_pool_kernel' for 'sm_90a'
ptxas info    : Function properties for _confidence_pool_kernel
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 207 registers, used 1 barriers
ptxas info    : Compiling entry function '_purify_apply_kernel' for 'sm_90a'
ptxas info    : Function properties for _purify_apply_kernel
    6408 bytes stack frame, 13736 bytes spill stores, 19036 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers, 6408 bytes cumulative stack size
"""


def test_parse_ptxas_log():
    usage = parse_ptxas_log(LOG)
    assert usage["_confidence_pool_kernel"] == Usage(207, 0, 0, 0)
    assert usage["_purify_apply_kernel"] == Usage(32, 13736, 19036, 6408)
    assert usage["_purify_apply_kernel"].spills == 13736 + 19036


def test_occupancy_matches_the_cuda_calculator():
    # 207 registers x 4 warps: 2 blocks of 4 warps per SM = 8 of 64 warps (issue 19's 12.5 %).
    assert blocks_per_sm(207, 4) == 2 and occupancy(207, 4) == 0.125
    assert occupancy(56, 4) == 36 / 64  # 1792 registers per warp: 9 blocks of 4 warps
    assert occupancy(32, 4) == 1.0
    assert occupancy(32, 4, smem=100 * 1024) == 2 * 4 / 64  # shared memory limits too
    assert waves(H100.sms * 16, 32, 4) == 1.0
