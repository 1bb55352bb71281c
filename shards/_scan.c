/* The fused scan: XOR, popcount, score and a bounded top-k heap in one pass.
 *
 * No N x W temporary is built: each code is read once and its Hamming distance
 * summed in registers. A candidate pays for its colour distance (a dot product of
 * two uint8 histograms) and its heap insertion only if its Hamming part alone
 * (a lower bound of the score) could still enter the top-k.
 *
 * With AVX-512 VPOPCNTDQ (checked at run time) a 256-bit scan does 8 codes per
 * step, and codes of a multiple of 512 bits one VPOPCNTQ per 8 words; otherwise
 * plain POPCNT. The score
 * of every code that reaches the heap is computed by one scalar function, so the
 * SIMD prefilter only decides what to skip, never what a score is.
 *
 * Build flags include -ffp-contract=off: scores must equal the numpy oracle's
 * to the last bit, so no fused multiply-add may sneak in.
 *
 * One call scans a whole batch: a table of tasks, each one block's rows (a range,
 * or a list of candidate rows) for some of the batch's queries, so a shard pays
 * Python's call and buffer costs once per batch, not once per constraint set.
 * scan_batch(...)'s arguments are documented in shards/kernels.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <immintrin.h>

typedef struct {
    Py_buffer view;
    int held;
} Buf;

static int get_buf(PyObject *obj, Buf *b, int writable, Py_ssize_t itemsize, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0) {
        PyErr_Format(PyExc_TypeError, "%s: expected a C-contiguous%s array", name, writable ? " writable" : "");
        return -1;
    }
    b->held = 1;
    if (b->view.itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s: item size %zd, expected %zd", name, b->view.itemsize, itemsize);
        return -1;
    }
    return 0;
}

static void release(Buf *b) {
    if (b->held) PyBuffer_Release(&b->view);
    b->held = 0;
}

static inline int worse(double s1, uint64_t k1, double s2, uint64_t k2) {
    return s1 > s2 || (s1 == s2 && k1 > k2);
}

/* Insert into a max-heap of size n <= k (ordered by score, then key); returns new size. */
static inline int64_t heap_push(double *hs, uint64_t *hk, int64_t *hr, int64_t *hh, double *hc, int64_t n,
                                int64_t k, double s, uint64_t key, int64_t loc, int64_t ham, double cd) {
    int64_t i;
    if (n < k) {
        i = n++;
        while (i > 0) {
            int64_t p = (i - 1) / 2;
            if (!worse(s, key, hs[p], hk[p])) break;
            hs[i] = hs[p]; hk[i] = hk[p]; hr[i] = hr[p]; hh[i] = hh[p]; hc[i] = hc[p];
            i = p;
        }
    } else {
        i = 0;
        for (;;) {
            int64_t c = 2 * i + 1;
            if (c >= k) break;
            if (c + 1 < k && worse(hs[c + 1], hk[c + 1], hs[c], hk[c])) c++;
            if (!worse(hs[c], hk[c], s, key)) break;
            hs[i] = hs[c]; hk[i] = hk[c]; hr[i] = hr[c]; hh[i] = hh[c]; hc[i] = hc[c];
            i = c;
        }
    }
    hs[i] = s; hk[i] = key; hr[i] = loc; hh[i] = ham; hc[i] = cd;
    return n;
}

typedef struct {          /* everything one (query, block) scan needs */
    const uint64_t *codes, *keys;
    const uint8_t *alive, *hists, *qh;
    const uint8_t *bonus; /* this query's optional tokens matched, per row, or NULL */
    const uint64_t *q;
    int64_t W, H, k, base;
    int check_alive, fast_dot, prefetch;
    double w_h, w_c, w_o, inv_bits, bonus_max;
    double *hs; uint64_t *hk; int64_t *hr;
    int64_t *hh; double *hc;  /* each entry's Hamming and colour distance, for the answer */
    int64_t n;            /* heap size */
    uint64_t thr;         /* codes with ham > thr cannot enter the heap */
} Scan;

/* Largest Hamming distance that could still enter the heap (conservative). */
static inline void update_thr(Scan *S) {
    if (S->n < S->k || S->w_h <= 0.0) { S->thr = UINT64_MAX; return; }
    double lim = (S->hs[0] + S->w_o * S->bonus_max) / (S->w_h * S->inv_bits);
    if (!(lim < 1e18)) { S->thr = UINT64_MAX; return; }
    S->thr = lim < 0 ? 0 : (uint64_t)lim + 1;
}

static int simd_ok = -1;       /* AVX-512 popcount for Hamming (VPOPCNTDQ) */
static int simd_dot_ok = -1;   /* AVX-512 BW for the colour dot product */
static int simd_allowed = 1;   /* tests switch SIMD off to check the scalar paths against the oracle */

static void detect_simd(void) {
    if (simd_ok >= 0) return;
    __builtin_cpu_init();
    simd_ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
           && __builtin_cpu_supports("avx512vpopcntdq");
    simd_dot_ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}

static int64_t dot_scalar(const uint8_t *a, const uint8_t *b, int64_t H) {
    int64_t dot = 0;
    /* 32-bit partial sums (255 * 255 * 16384 < 2^32) let the compiler vectorise the loop */
    for (int64_t b0 = 0; b0 < H; b0 += 16384) {
        int64_t b1 = b0 + 16384 < H ? b0 + 16384 : H;
        uint32_t part = 0;
        for (int64_t j = b0; j < b1; j++) part += (uint32_t)a[j] * (uint32_t)b[j];
        dot += part;
    }
    return dot;
}

/* 32 bins a step: widen both to int16 (0..255 fits), VPMADDWD into int32 pairs. Exact: a chunk
 * of 16384 bins sums to at most 16384 * 255 * 255 < 2^31, like the scalar loop's chunks, so
 * neither a lane nor the chunk's reduction can overflow. */
__attribute__((target("avx512f,avx512bw")))
static int64_t dot_avx512(const uint8_t *a, const uint8_t *b, int64_t H) {
    int64_t dot = 0, j = 0;
    while (j + 32 <= H) {
        int64_t end = j + 16384 < H ? j + 16384 : H;
        __m512i acc = _mm512_setzero_si512();
        for (; j + 32 <= end; j += 32) {
            __m512i va = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(a + j)));
            __m512i vb = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(b + j)));
            acc = _mm512_add_epi32(acc, _mm512_madd_epi16(va, vb));
        }
        dot += (int64_t)_mm512_reduce_add_epi32(acc);
    }
    return dot + dot_scalar(a + j, b + j, H - j);
}

static inline double colour_distance(const Scan *S, int64_t i) {
    const uint8_t *a = S->hists + i * S->H;
    int64_t dot = S->fast_dot ? dot_avx512(a, S->qh, S->H) : dot_scalar(a, S->qh, S->H);
    double cd = 1.0 - (double)dot / 65025.0;
    return cd < 0.0 ? 0.0 : cd;
}

/* The one place a score is computed; the candidate's ham is already known. */
static inline void consider(Scan *S, int64_t i, uint64_t ham) {
    if (S->check_alive && !S->alive[i]) return;
    double s = S->w_h * (double)ham * S->inv_bits;
    if (S->bonus) s = s - S->w_o * (double)S->bonus[i];
    if (S->n == S->k && s > S->hs[0]) return;  /* colour distance >= 0 cannot help */
    double cd = -1.0;  /* computed only when it counts or the entry is kept */
    if (S->w_c != 0.0) {
        cd = colour_distance(S, i);
        s = s + S->w_c * cd;
    }
    uint64_t key = S->keys[i];
    if (S->n < S->k || worse(S->hs[0], S->hk[0], s, key)) {
        if (cd < 0.0) cd = colour_distance(S, i);
        S->n = heap_push(S->hs, S->hk, S->hr, S->hh, S->hc, S->n, S->k, s, key, S->base | i, (int64_t)ham, cd);
        update_thr(S);
    }
}

__attribute__((target("popcnt")))
static inline uint64_t ham_scalar(const uint64_t *c, const uint64_t *q, int64_t W) {
    uint64_t h = 0;
    int64_t w = 0;
    for (; w + 4 <= W; w += 4)
        h += (uint64_t)__builtin_popcountll(c[w] ^ q[w]) + (uint64_t)__builtin_popcountll(c[w + 1] ^ q[w + 1])
           + (uint64_t)__builtin_popcountll(c[w + 2] ^ q[w + 2]) + (uint64_t)__builtin_popcountll(c[w + 3] ^ q[w + 3]);
    for (; w < W; w++) h += (uint64_t)__builtin_popcountll(c[w] ^ q[w]);
    return h;
}

#define PREFETCH 8                 /* rows ahead */
#define PREFETCH_ABOVE (2 << 20)   /* block bytes (codes + histograms) */

__attribute__((target("popcnt")))
static void scan_rows_scalar(Scan *S, const uint32_t *rows, int64_t m) {
    for (int64_t t = 0; t < m; t++) {
        int64_t i = (int64_t)rows[t];
        if (S->prefetch && t + PREFETCH < m) {  /* scattered rows of a big block: ask for a later row now */
            int64_t f = (int64_t)rows[t + PREFETCH];
            __builtin_prefetch(S->codes + f * S->W);
            if (S->w_c != 0.0) __builtin_prefetch(S->hists + f * S->H);
        }
        uint64_t h = ham_scalar(S->codes + i * S->W, S->q, S->W);
        if (h <= S->thr) consider(S, i, h);
    }
}

__attribute__((target("popcnt")))
static void scan_range_scalar(Scan *S, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) {
        uint64_t h = ham_scalar(S->codes + i * S->W, S->q, S->W);
        if (h <= S->thr) consider(S, i, h);
    }
}

#define AVX512 __attribute__((target("avx512f,avx512vl,avx512vpopcntdq,popcnt")))

/* 256-bit codes, 8 per step: 4 loads, 4 XOR, 4 VPOPCNTQ, then a transpose-add. */
AVX512 static void scan_range_w4(Scan *S, int64_t lo, int64_t hi) {
    const __m512i qq = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)S->q));
    const __m512i fidx = _mm512_setr_epi64(0, 4, 1, 5, 8, 12, 9, 13);
    const __m512i gidx = _mm512_setr_epi64(2, 6, 3, 7, 10, 14, 11, 15);
    uint64_t hv[8];
    int64_t i = lo;
    for (; i + 8 <= hi; i += 8) {
        const __m512i *p = (const __m512i *)(S->codes + i * 4);
        __m512i c0 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(p), qq));
        __m512i c1 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(p + 1), qq));
        __m512i c2 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(p + 2), qq));
        __m512i c3 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(p + 3), qq));
        __m512i e01 = _mm512_add_epi64(_mm512_unpacklo_epi64(c0, c1), _mm512_unpackhi_epi64(c0, c1));
        __m512i e23 = _mm512_add_epi64(_mm512_unpacklo_epi64(c2, c3), _mm512_unpackhi_epi64(c2, c3));
        __m512i h = _mm512_add_epi64(_mm512_permutex2var_epi64(e01, fidx, e23),
                                     _mm512_permutex2var_epi64(e01, gidx, e23));  /* codes i..i+7 */
        __mmask8 m = _mm512_cmple_epu64_mask(h, _mm512_set1_epi64((long long)S->thr));
        if (!m) continue;
        _mm512_storeu_si512((__m512i *)hv, h);
        for (int l = 0; l < 8; l++)
            if (hv[l] <= S->thr) consider(S, i + l, hv[l]);  /* thr may drop as we go */
    }
    scan_range_scalar(S, i, hi);
}

/* Codes of a multiple of 512 bits: one VPOPCNTQ per 8 words, reduced per code. */
AVX512 static void scan_range_w8n(Scan *S, int64_t lo, int64_t hi) {
    const int64_t W = S->W;
    for (int64_t i = lo; i < hi; i++) {
        const uint64_t *c = S->codes + i * W;
        __m512i acc = _mm512_setzero_si512();
        for (int64_t w = 0; w < W; w += 8)
            acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(
                      _mm512_loadu_si512(c + w), _mm512_loadu_si512(S->q + w))));
        uint64_t h = (uint64_t)_mm512_reduce_add_epi64(acc);
        if (h <= S->thr) consider(S, i, h);
    }
}

static void scan_range(Scan *S, int64_t lo, int64_t hi) {
    if (simd_ok && simd_allowed && S->W == 4) scan_range_w4(S, lo, hi);
    else if (simd_ok && simd_allowed && S->W % 8 == 0) scan_range_w8n(S, lo, hi);
    else scan_range_scalar(S, lo, hi);
}

#define CHUNK 2048  /* rows per chunk in a batch: 2048 x 32 B = 64 KiB stays in L2 */

#define FAIL(exc, msg) do { PyErr_SetString(exc, msg); goto done; } while (0)

/* A task row: which block, which of its rows, for which queries. */
enum { T_BLOCK, T_N, T_LO, T_HI, T_USE_ROWS, T_CHECK_ALIVE, T_MLO, T_MHI, T_COLS };

typedef struct { Buf codes, keys, alive, hists; int held; } BlockBufs;

static int get_block(PyObject *blocks, int64_t bid, BlockBufs *bb) {
    if (bb->held) return 0;
    PyObject *t = PySequence_Fast_GET_ITEM(blocks, bid);  /* borrowed */
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 4) {
        PyErr_Format(PyExc_TypeError, "scan_batch: block %lld is not a (codes, keys, alive, hists) tuple",
                     (long long)bid);
        return -1;
    }
    bb->held = 1;
    if (get_buf(PyTuple_GET_ITEM(t, 0), &bb->codes, 0, 8, "codes")
        || get_buf(PyTuple_GET_ITEM(t, 1), &bb->keys, 0, 8, "keys")
        || get_buf(PyTuple_GET_ITEM(t, 2), &bb->alive, 0, 1, "alive")
        || get_buf(PyTuple_GET_ITEM(t, 3), &bb->hists, 0, 1, "hists"))
        return -1;
    if (bb->codes.view.ndim != 2 || bb->hists.view.ndim != 2) {
        PyErr_SetString(PyExc_ValueError, "scan_batch: a block's codes and hists must be 2-D");
        return -1;
    }
    return 0;
}

static void release_block(BlockBufs *bb) {
    release(&bb->codes); release(&bb->keys); release(&bb->alive); release(&bb->hists);
    bb->held = 0;
}

/* scan_batch(blocks, tasks, rows, members, bonuses, q, qh, w_h, w_c, w_o, kq, inv_bits,
 *            hs, hk, hr, hh, hc, hn): every task of a batch in one call (see shards/kernels.py). */
static PyObject *py_scan_batch(PyObject *self, PyObject *args) {
    PyObject *o_blocks, *o_tasks, *o_rows, *o_members, *o_bonuses, *o_q, *o_qh, *o_wh, *o_wc, *o_wo, *o_kq;
    PyObject *o_hs, *o_hk, *o_hr, *o_hh, *o_hc, *o_hn;
    double inv_bits;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOdOOOOOO", &o_blocks, &o_tasks, &o_rows, &o_members, &o_bonuses,
                          &o_q, &o_qh, &o_wh, &o_wc, &o_wo, &o_kq, &inv_bits,
                          &o_hs, &o_hk, &o_hr, &o_hh, &o_hc, &o_hn))
        return NULL;
    Buf tasks = {0}, rows = {0}, members = {0}, q = {0}, qh = {0}, wh = {0}, wc = {0}, wo = {0}, kq = {0};
    Buf hs = {0}, hk = {0}, hr = {0}, hh = {0}, hc = {0}, hn = {0};
    PyObject *ret = NULL, *blocks = NULL, *bonuses = NULL;
    BlockBufs *bbs = NULL;
    Buf *bon = NULL;
    double *bmax = NULL;
    Py_ssize_t nblocks = 0, T = 0;
    if (get_buf(o_tasks, &tasks, 0, 8, "tasks") || get_buf(o_rows, &rows, 0, 4, "rows")
        || get_buf(o_members, &members, 0, 8, "members") || get_buf(o_q, &q, 0, 8, "q")
        || get_buf(o_qh, &qh, 0, 1, "qh") || get_buf(o_wh, &wh, 0, 8, "w_h") || get_buf(o_wc, &wc, 0, 8, "w_c")
        || get_buf(o_wo, &wo, 0, 8, "w_o") || get_buf(o_kq, &kq, 0, 8, "kq")
        || get_buf(o_hs, &hs, 1, 8, "hs") || get_buf(o_hk, &hk, 1, 8, "hk") || get_buf(o_hr, &hr, 1, 8, "hr")
        || get_buf(o_hh, &hh, 1, 8, "hh") || get_buf(o_hc, &hc, 1, 8, "hc") || get_buf(o_hn, &hn, 1, 8, "hn"))
        goto done;
    if (tasks.view.ndim != 2 || tasks.view.shape[1] != T_COLS || q.view.ndim != 2 || qh.view.ndim != 2
        || hs.view.ndim != 2)
        FAIL(PyExc_ValueError, "scan_batch: tasks must be (T, 8); q, qh and hs 2-D");
    blocks = PySequence_Fast(o_blocks, "scan_batch: blocks must be a sequence");
    bonuses = PySequence_Fast(o_bonuses, "scan_batch: bonuses must be a sequence");
    if (!blocks || !bonuses) goto done;
    nblocks = PySequence_Fast_GET_SIZE(blocks);
    T = tasks.view.shape[0];
    const int64_t nq = q.view.shape[0], W = q.view.shape[1], H = qh.view.shape[1], K = hs.view.shape[1];
    const int64_t R = rows.view.len / 4, M = members.view.len / 8;
    if (PySequence_Fast_GET_SIZE(bonuses) != T || qh.view.shape[0] != nq || hs.view.shape[0] != nq
        || hk.view.len != hs.view.len || hr.view.len != hs.view.len || hh.view.len != hs.view.len
        || hc.view.len != hs.view.len || hn.view.len / 8 != nq || wh.view.len / 8 != nq
        || wc.view.len / 8 != nq || wo.view.len / 8 != nq || kq.view.len / 8 != nq)
        FAIL(PyExc_ValueError, "scan_batch: inconsistent shapes");
    const int64_t *kp = (const int64_t *)kq.view.buf, *mp = (const int64_t *)members.view.buf;
    const uint32_t *rp = (const uint32_t *)rows.view.buf;
    for (int64_t j = 0; j < nq; j++)
        if (kp[j] < 1 || kp[j] > K) FAIL(PyExc_ValueError, "scan_batch: k outside [1, heap width]");
    for (int64_t t = 0; t < M; t++)
        if (mp[t] < 0 || mp[t] >= nq) FAIL(PyExc_IndexError, "scan_batch: member out of range");
    bbs = PyMem_Calloc(nblocks ? nblocks : 1, sizeof(BlockBufs));
    bon = PyMem_Calloc(T ? T : 1, sizeof(Buf));
    bmax = PyMem_Calloc(M ? M : 1, sizeof(double));
    if (!bbs || !bon || !bmax) { PyErr_NoMemory(); goto done; }
    const int64_t *tp = (const int64_t *)tasks.view.buf;
    for (Py_ssize_t t = 0; t < T; t++) {  /* validate every task before any heap is touched */
        const int64_t *r = tp + t * T_COLS;
        int64_t bid = r[T_BLOCK], n = r[T_N];
        if (bid < 0 || bid >= nblocks) FAIL(PyExc_IndexError, "scan_batch: block out of range");
        if (get_block(blocks, bid, &bbs[bid]) < 0) goto done;
        BlockBufs *b = &bbs[bid];
        if (b->codes.view.shape[1] != W || b->hists.view.shape[1] != H || n < 0 || n > b->codes.view.shape[0]
            || b->keys.view.len / 8 < n || b->alive.view.len < n || b->hists.view.shape[0] < n
            || r[T_MLO] < 0 || r[T_MLO] > r[T_MHI] || r[T_MHI] > M)
            FAIL(PyExc_ValueError, "scan_batch: a task does not fit its block or the queries");
        if (r[T_USE_ROWS]) {
            if (r[T_LO] < 0 || r[T_LO] > r[T_HI] || r[T_HI] > R)
                FAIL(PyExc_ValueError, "scan_batch: task rows outside rows");
            for (int64_t i = r[T_LO]; i < r[T_HI]; i++)
                if (rp[i] >= (uint64_t)n) FAIL(PyExc_IndexError, "scan_batch: row out of range");
        } else if (r[T_LO] < 0 || r[T_HI] > n || r[T_LO] > r[T_HI])
            FAIL(PyExc_ValueError, "scan_batch: task range outside the block");
        PyObject *bo = PySequence_Fast_GET_ITEM(bonuses, t);
        if (bo != Py_None) {  /* (members, >= n) uint8: each member's optional tokens matched per row */
            if (get_buf(bo, &bon[t], 0, 1, "bonus")) goto done;
            int64_t nm = r[T_MHI] - r[T_MLO];
            if (bon[t].view.ndim != 2 || bon[t].view.shape[0] != nm || bon[t].view.shape[1] < n)
                FAIL(PyExc_ValueError, "scan_batch: a bonus must be (task members, block rows)");
        }
    }
    Py_BEGIN_ALLOW_THREADS
    Scan S;
    detect_simd();
    S.W = W; S.H = H; S.inv_bits = inv_bits; S.fast_dot = simd_dot_ok && simd_allowed;
    for (Py_ssize_t t = 0; t < T; t++) {
        const int64_t *r = tp + t * T_COLS;
        const BlockBufs *b = &bbs[r[T_BLOCK]];
        S.codes = b->codes.view.buf; S.keys = b->keys.view.buf; S.alive = b->alive.view.buf;
        S.hists = b->hists.view.buf;
        S.base = r[T_BLOCK] << 32; S.check_alive = (int)r[T_CHECK_ALIVE];
        /* prefetching pays off where the block's rows miss the cache (24 % on 64 MB of rows), not below */
        S.prefetch = r[T_N] * (W * 8 + H) > PREFETCH_ABOVE;
        int64_t m = r[T_HI] - r[T_LO];
        if (bon[t].held)  /* the most any of the block's rows can gain, per member */
            for (int64_t mj = r[T_MLO]; mj < r[T_MHI]; mj++) {
                const uint8_t *bj = (const uint8_t *)bon[t].view.buf + (mj - r[T_MLO]) * bon[t].view.shape[1];
                uint8_t mx = 0;
                for (int64_t i = 0; i < r[T_N]; i++) if (bj[i] > mx) mx = bj[i];
                bmax[mj] = (double)mx;
            }
        for (int64_t c0 = 0; c0 < m; c0 += CHUNK) {
            int64_t c1 = c0 + CHUNK < m ? c0 + CHUNK : m;
            for (int64_t mj = r[T_MLO]; mj < r[T_MHI]; mj++) {
                int64_t j = mp[mj];
                S.q = (const uint64_t *)q.view.buf + j * W;
                S.qh = (const uint8_t *)qh.view.buf + j * H;
                S.bonus = bon[t].held
                    ? (const uint8_t *)bon[t].view.buf + (mj - r[T_MLO]) * bon[t].view.shape[1] : NULL;
                S.bonus_max = bon[t].held ? bmax[mj] : 0.0;
                S.w_h = ((double *)wh.view.buf)[j]; S.w_c = ((double *)wc.view.buf)[j];
                S.w_o = ((double *)wo.view.buf)[j];
                S.k = kp[j];
                S.hs = (double *)hs.view.buf + j * K; S.hk = (uint64_t *)hk.view.buf + j * K;
                S.hr = (int64_t *)hr.view.buf + j * K;
                S.hh = (int64_t *)hh.view.buf + j * K; S.hc = (double *)hc.view.buf + j * K;
                S.n = ((int64_t *)hn.view.buf)[j];
                update_thr(&S);
                if (r[T_USE_ROWS]) scan_rows_scalar(&S, rp + r[T_LO] + c0, c1 - c0);
                else scan_range(&S, r[T_LO] + c0, r[T_LO] + c1);
                ((int64_t *)hn.view.buf)[j] = S.n;
            }
        }
    }
    Py_END_ALLOW_THREADS
    ret = Py_None;
    Py_INCREF(ret);
done:
    if (bbs) for (Py_ssize_t i = 0; i < nblocks; i++) release_block(&bbs[i]);
    if (bon) for (Py_ssize_t t = 0; t < T; t++) release(&bon[t]);
    PyMem_Free(bbs); PyMem_Free(bon); PyMem_Free(bmax);
    Py_XDECREF(blocks); Py_XDECREF(bonuses);
    release(&tasks); release(&rows); release(&members); release(&q); release(&qh); release(&wh); release(&wc);
    release(&wo); release(&kq); release(&hs); release(&hk); release(&hr); release(&hh); release(&hc); release(&hn);
    return ret;
}

/* lookup(base, order, keys, out): out[i] = the position p in `base` with
 * base[p] == keys[i], found by binary search over `order` (uint32 positions of
 * base, sorted by key), or -1. The id index keeps 4 bytes an item this way
 * instead of a sorted copy of the keys (numpy's searchsorted(sorter=) would
 * copy a uint32 sorter to intp on every call). */
static PyObject *py_lookup(PyObject *self, PyObject *args) {
    PyObject *base_o, *order_o, *keys_o, *out_o;
    if (!PyArg_ParseTuple(args, "OOOO", &base_o, &order_o, &keys_o, &out_o)) return NULL;
    Buf base = {0}, order = {0}, keys = {0}, out = {0};
    PyObject *ret = NULL;
    if (get_buf(base_o, &base, 0, 8, "base") < 0 || get_buf(order_o, &order, 0, 4, "order") < 0
        || get_buf(keys_o, &keys, 0, 8, "keys") < 0 || get_buf(out_o, &out, 1, 8, "out") < 0)
        goto done;
    const uint64_t *bk = (const uint64_t *)base.view.buf;
    const uint32_t *ord = (const uint32_t *)order.view.buf;
    const uint64_t *qk = (const uint64_t *)keys.view.buf;
    int64_t *o = (int64_t *)out.view.buf;
    Py_ssize_t nb = base.view.len / 8, n = order.view.len / 4, m = keys.view.len / 8;
    if (out.view.len / 8 != m) {
        PyErr_SetString(PyExc_ValueError, "lookup: out must have one slot per key");
        goto done;
    }
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < m && !bad; i++) {
        uint64_t key = qk[i];
        Py_ssize_t lo = 0, hi = n;
        while (lo < hi) {
            Py_ssize_t mid = lo + (hi - lo) / 2;
            if (ord[mid] >= (uint64_t)nb) { bad = 1; break; }
            if (bk[ord[mid]] < key) lo = mid + 1; else hi = mid;
        }
        if (!bad && lo < n && ord[lo] >= (uint64_t)nb) bad = 1;
        o[i] = (!bad && lo < n && bk[ord[lo]] == key) ? (int64_t)ord[lo] : -1;
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "lookup: order holds a position outside base");
        goto done;
    }
    ret = Py_None;
    Py_INCREF(ret);
done:
    release(&base); release(&order); release(&keys); release(&out);
    return ret;
}

static PyObject *py_simd(PyObject *self, PyObject *noargs) {
    detect_simd();
    if (!simd_allowed) return PyUnicode_FromString("scalar");
    return PyUnicode_FromString(simd_ok && simd_dot_ok ? "avx512-vpopcntdq+bw" : simd_ok ? "avx512-vpopcntdq"
                                : simd_dot_ok ? "popcnt+avx512bw" : "popcnt");
}

static PyObject *py_allow_simd(PyObject *self, PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    int was = simd_allowed;
    simd_allowed = on;
    return PyBool_FromLong(was);
}

static PyMethodDef methods[] = {
    {"scan_batch", py_scan_batch, METH_VARARGS, "Fused Hamming + colour top-k scans of a batch (see shards/kernels.py)."},
    {"lookup", py_lookup, METH_VARARGS, "Binary search of keys through a uint32 sort order (see shards/idindex.py)."},
    {"simd", py_simd, METH_NOARGS, "Which instruction set the scan uses on this CPU."},
    {"allow_simd", py_allow_simd, METH_O, "allow_simd(flag) -> previous: False runs the scalar paths (tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&module); }
