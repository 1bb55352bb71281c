"""The batch scan kernel against plain numpy, and its checks of a bad task table."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shards import kernels
from shards.codes import colour_distance, hamming


def random_setup(rng, words, bins):
    blocks = []
    for b in range(int(rng.integers(1, 5))):
        n = int(rng.integers(0, 3000))
        blocks.append((rng.integers(0, 2**63, (n, words), dtype=np.uint64) * np.uint64(2)
                       + rng.integers(0, 2, (n, words), dtype=np.uint64),
                       (rng.permutation(n * 7 + 1)[:n] + b * 100_000).astype(np.uint64),  # unique ids
                       (rng.random(n) < 0.8).astype(np.uint8),
                       rng.integers(0, 256, (n, bins), dtype=np.uint8)))
    nq = int(rng.integers(1, 12))
    q = rng.integers(0, 2**63, (nq, words), dtype=np.uint64)
    qh = rng.integers(0, 256, (nq, bins), dtype=np.uint8)
    w_h, w_c, w_o = rng.random(nq), rng.random(nq) * (rng.random(nq) < 0.8), rng.random(nq)
    kq = rng.integers(1, 30, nq).astype(np.int64)
    tasks, rows, members, bonuses, truth = [], [], [], [], []
    n_rows = 0
    for _ in range(int(rng.integers(0, 8))):
        bid = int(rng.integers(len(blocks)))
        codes, keys, alive, hists = blocks[bid]
        n = int(rng.integers(0, len(keys) + 1))  # only the first n rows are valid
        who = sorted(rng.choice(nq, int(rng.integers(1, nq + 1)), replace=False).tolist())
        mlo = len(members)
        members += who
        if rng.random() < 0.5:  # candidate rows
            r = np.sort(rng.choice(n, int(rng.integers(0, n + 1)), replace=False)).astype(np.uint32) if n else \
                np.zeros(0, np.uint32)
            tasks.append((bid, n, n_rows, n_rows + len(r), 1, 0, mlo, len(members)))
            rows.append(r)
            n_rows += len(r)
            seen = r.astype(np.int64)
        else:  # a range, dead rows skipped
            lo = int(rng.integers(0, n + 1))
            hi = int(rng.integers(lo, n + 1))
            tasks.append((bid, n, lo, hi, 0, 1, mlo, len(members)))
            seen = np.arange(lo, hi)[alive[lo:hi] == 1]
        bonus = rng.integers(0, 3, (len(who), n + int(rng.integers(0, 3)))).astype(np.uint8) \
            if rng.random() < 0.5 else None
        bonuses.append(bonus)
        truth.append((bid, seen, who, bonus))
    return (blocks, tasks, rows, members, bonuses, q, qh, w_h, w_c, w_o, kq), truth


def expected(blocks, q, qh, w_h, w_c, w_o, kq, truth, bits):
    """Every (query, candidate) scored in numpy, then fully sorted by (score, key)."""
    per_query = [[] for _ in range(len(q))]
    for bid, seen, who, bonus in truth:
        codes, keys, _, hists = blocks[bid]
        for m, j in enumerate(who):
            ham = hamming(codes[seen], q[j])
            cd = colour_distance(hists[seen], qh[j])
            b = bonus[m, seen].astype(np.float64) if bonus is not None else np.zeros(len(seen))
            score = (w_h[j] * ham * (1.0 / bits) - w_o[j] * b) + w_c[j] * cd
            for r, s, h, c in zip(seen.tolist(), score.tolist(), ham.tolist(), cd.tolist()):
                per_query[j].append((s, int(keys[r]), bid << 32 | r, h, c))
    return [sorted(p)[: kq[j]] for j, p in enumerate(per_query)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), words=st.sampled_from([1, 3, 4, 8, 16]),
       bins=st.sampled_from([8, 32, 64, 77]), simd=st.booleans())
def test_scan_batch_equals_numpy(seed, words, bins, simd):
    """Both the SIMD paths (Hamming 8 codes a step, colour 32 bins a step) and the scalar ones."""
    rng = np.random.default_rng(seed)
    (blocks, tasks, rows, members, bonuses, q, qh, w_h, w_c, w_o, kq), truth = random_setup(rng, words, bins)
    heaps = kernels.new_heaps(len(q), int(kq.max()))
    with kernels.simd_allowed(simd):
        kernels.scan_batch(blocks, np.asarray(tasks, np.int64).reshape(-1, kernels.TASK_COLUMNS),
                           np.concatenate(rows) if rows else kernels.NO_ROWS, np.asarray(members, np.int64),
                           bonuses, q, qh, w_h, w_c, w_o, kq, 1.0 / (64 * words), heaps)
    hs, hk, hr, hh, hc, hn = heaps
    for j, want in enumerate(expected(blocks, q, qh, w_h, w_c, w_o, kq, truth, 64 * words)):
        got = sorted(zip(hs[j, : hn[j]].tolist(), hk[j, : hn[j]].tolist(), hr[j, : hn[j]].tolist(),
                         hh[j, : hn[j]].tolist(), hc[j, : hn[j]].tolist()))
        # the score is the same bit for bit; the colour distance too, though the kernel sums in integers
        assert got == want


def one_task(**change):
    rng = np.random.default_rng(0)
    block = (rng.integers(0, 2**63, (10, 4), dtype=np.uint64), np.arange(10, dtype=np.uint64),
             np.ones(10, np.uint8), np.zeros((10, 8), np.uint8))
    args = dict(blocks=[block], tasks=np.asarray([(0, 10, 0, 3, 1, 0, 0, 1)], np.int64),
                rows=np.asarray([1, 2, 3], np.uint32), members=np.zeros(1, np.int64), bonuses=[None],
                q=np.zeros((1, 4), np.uint64), qh=np.zeros((1, 8), np.uint8), w_h=np.ones(1), w_c=np.ones(1),
                w_o=np.zeros(1), kq=np.asarray([5], np.int64), inv_bits=1 / 256, heaps=kernels.new_heaps(1, 5))
    args.update(change)
    return args


@pytest.mark.parametrize("change, error", [
    (dict(rows=np.asarray([1, 2, 10], np.uint32)), IndexError),                 # row beyond the block's n
    (dict(tasks=np.asarray([(1, 10, 0, 3, 1, 0, 0, 1)], np.int64)), IndexError),   # no such block
    (dict(tasks=np.asarray([(0, 11, 0, 3, 1, 0, 0, 1)], np.int64)), ValueError),   # n beyond the arrays
    (dict(tasks=np.asarray([(0, 10, 0, 4, 1, 0, 0, 1)], np.int64)), ValueError),   # rows slice beyond rows
    (dict(tasks=np.asarray([(0, 10, 0, 11, 0, 0, 0, 1)], np.int64)), ValueError),  # range beyond n
    (dict(tasks=np.asarray([(0, 10, 0, 3, 1, 0, 0, 2)], np.int64)), ValueError),   # members beyond members
    (dict(members=np.asarray([3], np.int64)), IndexError),                       # no such query
    (dict(kq=np.asarray([6], np.int64)), ValueError),                            # k wider than the heap
    (dict(bonuses=[np.zeros((1, 9), np.uint8)]), ValueError),                    # bonus narrower than n
    (dict(bonuses=[np.zeros((1, 10))]), TypeError),                              # bonus counts are uint8
    (dict(bonuses=[]), ValueError),                                              # one bonus per task
    (dict(blocks=[None]), TypeError),                                            # a used block is missing
    (dict(rows=np.asarray([1, 2, 3], np.int64)), TypeError),                     # rows must be uint32
])
def test_bad_task_tables_raise_and_touch_no_heap(change, error):
    args = one_task(**change)
    before = [h.copy() for h in args["heaps"]]
    with pytest.raises(error):
        kernels.scan_batch(**args)
    assert all(np.array_equal(a, b) for a, b in zip(before, args["heaps"]))


def test_the_good_table_fills_the_heap():
    args = one_task()
    kernels.scan_batch(**args)
    assert args["heaps"][5][0] == 3
    assert sorted(args["heaps"][2][0, :3].tolist()) == [1, 2, 3]


def test_simd_switch_is_restored():
    before = kernels.simd()
    with kernels.simd_allowed(False):
        assert kernels.simd() == "scalar"
    assert kernels.simd() == before


def test_colour_distance_of_full_histograms_is_exact():
    """255 in every bin of long histograms: the largest sums the chunked dot products must hold."""
    for bins in (32, 64, 1000, 70000):
        hists = np.full((3, bins), 255, np.uint8)
        hists[1, ::3] = 0
        q = np.full((1, bins), 255, np.uint8)
        for simd in (True, False):
            heaps = kernels.new_heaps(1, 3)
            with kernels.simd_allowed(simd):
                kernels.scan_batch([(np.zeros((3, 1), np.uint64), np.arange(3, dtype=np.uint64),
                                     np.ones(3, np.uint8), hists)],
                                   np.asarray([(0, 3, 0, 3, 0, 0, 0, 1)], np.int64), kernels.NO_ROWS,
                                   np.zeros(1, np.int64), [None], np.zeros((1, 1), np.uint64), q, np.ones(1),
                                   np.ones(1), np.zeros(1),
                                   np.asarray([3], np.int64), 1 / 64, heaps)
            got = dict(zip(heaps[1][0].tolist(), heaps[4][0].tolist()))
            want = colour_distance(hists, q[0])
            assert [got[i] for i in range(3)] == want.tolist(), (bins, simd)
