// Block-sparse causal attention on the GPU, the CUDA twin of tinyphi3/backends/numba/blocksparse.py
//
// Both kernels visit only the active key blocks of a layout (tinyphi3/nn/blocksparse_layout.py),
// given in CSR form: the active key blocks of head h's query block row qb are
// cols[row_ptr[h * NB + qb] .. row_ptr[h * NB + qb + 1]), ascending. They fold one tile of keys
// at a time into an online softmax (FlashAttention-2, Dao 2023; Milakov & Gimelshein 2018):
//
//     m' = max(m, max_j s_j)     l' = l e^(m - m') + sum_j e^(s_j - m')
//     acc' = acc e^(m - m') + sum_j e^(s_j - m') v_j          out = acc / l   (0 when l = 0)
//
// with s_j = scale * (q . k_j) over the keys j <= the query's position. Inputs float32 or
// bfloat16, every sum in float32, output float32. tinyphi3_gpu/attention_emulation.py is a NumPy
// line-by-line emulation of this file (same names, same loops, same order of sums), tested
// against the NumPy reference; tinyphi3_gpu/attention.py launches the kernels. Without a GPU,
// tests/test_gpu_attention_emulation.py also runs this file on CPU threads (one per CUDA
// thread) through the launchers and finds the emulation's bits.
//
// Rounding is pinned so that the emulation can follow it: every multiply-add that should fuse is
// an explicit fmaf, and __fmul_rn (never fused) where a product must round on its own.
// Built without --use_fast_math: expf, not __expf.
//
// Memory layouts (elements, not bytes): q [B, H, T, HD] and out [B, H, T, HD] contiguous;
// k, v [B, KV, S, HD] with strides (sb, sh, ss) for the batch, head and position axes and a
// contiguous last axis, so a KV cache's buffer view [:, :, :S] is read in place.

#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

constexpr unsigned FULL_WARP = 0xffffffffu;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }   // exact
__device__ __forceinline__ float neg_inf() { return -__int_as_float(0x7f800000); }

// e^(m - m_new): how much a row's sums shrink when its running max grows to m_new. 1 while the
// row has seen no key at all (m = m_new = -inf, where m - m_new would be NaN).
__device__ __forceinline__ float rescale_factor(float m, float m_new) {
    return m_new == neg_inf() ? 1.0f : expf(m - m_new);
}

// e^(s - m_new), the weight of a key; 0 for a masked key (s = -inf), even when m_new = -inf.
__device__ __forceinline__ float key_weight(float s, float m_new) {
    return s == neg_inf() ? 0.0f : expf(s - m_new);
}

// tile[j * ROW + d] = row (key0 + j) of one head of k or v, d < HD, for j < count; rows
// count .. N - 1 are zero (a zero row with weight 0 adds exactly 0, where a stale one could
// hold Inf or NaN). Consecutive threads read consecutive d of a row: coalesced. The tile holds
// float32 whatever the input: a bf16 is converted once, here, exactly.
template <typename scalar_t, int HD, int N, int ROW, int THREADS>
__device__ __forceinline__ void load_tile(float* tile, const scalar_t* head, long long ss,
                                          int key0, int count) {
    for (int e = threadIdx.x; e < N * HD; e += THREADS) {
        const int j = e / HD, d = e % HD;
        tile[j * ROW + d] = j < count ? to_float(head[(long long)(key0 + j) * ss + d]) : 0.0f;
    }
}

// ---------------------------------------------------------------------------------------------
// Prefill: T queries at positions past .. past + T - 1.
//
// Grid: x = the query tiles, tile j covering positions [j*BM, (j+1)*BM) (aligned to absolute
// positions, so with BM dividing block_size a tile lies in one layout block row qb), the first
// being past / BM; y = b * H + h. Block: LANES = 4 threads per query row, BM * 4 threads.
//
// Why this shape: a thread owns HD/4 dims of its row's q and acc (lane l owns d = l + 4 i), so
// q, acc and the partial sums pv live in registers (HD = 128: 3 x 32 floats) where one thread
// per row would need 3 x 128. The 4 partial dot products are summed with two __shfl_xor_sync
// inside the 4 lanes. All threads of a warp read the same key j at 4 adjacent words: a
// broadcast, no bank conflict. The scores of a tile go to shared memory, s_tile[j][row] (rows
// in consecutive banks), so that the loops over the BN keys need not be unrolled to keep them
// in registers: fully unrolled (2 x BN x HD/4 multiply-adds) the kernels took minutes to
// compile and 228 registers. K and V of a tile share ONE static shared buffer of BN x HD
// floats (K is read to the last score before V overwrites it): at BN = 64, HD = 128 that is
// 32 KB, plus 16 KB of scores, 48 KB, the limit of static shared memory, which separate K and V
// tiles (64 KB) would pass. Static, so ptxas checks that limit when this file compiles.
template <typename scalar_t, int HD, int TILE>
__device__ void prefill(const scalar_t* q, const scalar_t* k, const scalar_t* v, float* out,
                        const int* row_ptr, const int* cols, int H, int KV, int T, int NB,
                        int block_size, float scale, int past, long long k_sb, long long k_sh,
                        long long k_ss, long long v_sb, long long v_sh, long long v_ss) {
    constexpr int BM = TILE, BN = TILE;       // query rows per CTA, keys per tile
    constexpr int LANES = 4;                  // threads per query row
    constexpr int DPL = HD / LANES;           // dims per lane
    constexpr int THREADS = BM * LANES;
    __shared__ float kv_tile[BN * HD];        // K of the tile, then V
    __shared__ float s_tile[BN * BM];         // s_tile[j * BM + row]: the tile's scores

    const int row = threadIdx.x / LANES, lane = threadIdx.x % LANES;
    const int bh = blockIdx.y, b = bh / H, h = bh % H, kv = h / (H / KV);   // GQA
    const int tile0 = (past / BM + blockIdx.x) * BM;          // position of row 0
    const int q_first = max(tile0, past), q_last = min(tile0 + BM, past + T) - 1;
    const int position = tile0 + row;
    const bool valid = position >= q_first && position <= q_last;
    const int t = valid ? position - past : 0;               // row of q and out
    const int qb = tile0 / block_size;                        // the layout row of every query here
    const scalar_t* k_head = k + b * k_sb + kv * k_sh;
    const scalar_t* v_head = v + b * v_sb + kv * v_sh;

    float q_reg[DPL], acc[DPL], pv[DPL];
    const scalar_t* q_row = q + ((long long)bh * T + t) * HD;
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
        q_reg[i] = valid ? to_float(q_row[lane + LANES * i]) : 0.0f;
        acc[i] = 0.0f;
    }
    float m = neg_inf(), l = 0.0f;            // running max, running sum of e^(s - m)

    for (int idx = row_ptr[h * NB + qb]; idx < row_ptr[h * NB + qb + 1]; ++idx) {
        const int kb = cols[idx];
        if (kb * block_size > q_last) break;  // ascending: every later block is in the future
        const int block_end = (kb + 1) * block_size;
        for (int key0 = kb * block_size; key0 < block_end && key0 <= q_last; key0 += BN) {
            const int count = min(BN, q_last + 1 - key0);    // keys past q_last are never seen
            load_tile<scalar_t, HD, BN, HD, THREADS>(kv_tile, k_head, k_ss, key0, count);
            __syncthreads();
            float tile_max = neg_inf();
            for (int j = 0; j < BN; ++j) {                    // s_j = scale * q . k_j
                float part = 0.0f;
#pragma unroll
                for (int i = 0; i < DPL; ++i)
                    part = fmaf(q_reg[i], kv_tile[j * HD + lane + LANES * i], part);
                part += __shfl_xor_sync(FULL_WARP, part, 1);  // (p0 + p1) + (p2 + p3),
                part += __shfl_xor_sync(FULL_WARP, part, 2);  // the same in all 4 lanes
                const float s = valid && key0 + j <= position ? __fmul_rn(part, scale) : neg_inf();
                if (lane == 0) s_tile[j * BM + row] = s;
                tile_max = fmaxf(tile_max, s);
            }
            __syncthreads();                                  // all done with K
            load_tile<scalar_t, HD, BN, HD, THREADS>(kv_tile, v_head, v_ss, key0, count);
            __syncthreads();
            const float m_new = fmaxf(m, tile_max);
            const float alpha = rescale_factor(m, m_new);
            float row_sum = 0.0f;
#pragma unroll
            for (int i = 0; i < DPL; ++i) pv[i] = 0.0f;
            for (int j = 0; j < BN; ++j) {                    // pv = sum_j p_j v_j
                const float p = key_weight(s_tile[j * BM + row], m_new);
                row_sum += p;
#pragma unroll
                for (int i = 0; i < DPL; ++i)
                    pv[i] = fmaf(p, kv_tile[j * HD + lane + LANES * i], pv[i]);
            }
            l = fmaf(l, alpha, row_sum);
#pragma unroll
            for (int i = 0; i < DPL; ++i) acc[i] = fmaf(acc[i], alpha, pv[i]);
            m = m_new;
            __syncthreads();                                  // all done with V and scores
        }
    }
    if (valid) {
        float* out_row = out + ((long long)bh * T + t) * HD;
#pragma unroll
        for (int i = 0; i < DPL; ++i)
            out_row[lane + LANES * i] = l > 0.0f ? acc[i] / l : 0.0f;   // 0: no key seen
    }
}

// ---------------------------------------------------------------------------------------------
// Decode: one new query per sequence b at position lengths[b] - 1, over a KV cache.
//
// Grid: x = chunks of G query heads of a GQA group (one chunk when H / KV <= G), y = b * KV + kv.
// Block: 128 threads. One CTA serves the query heads h0 .. h0 + heads - 1 of KV head kv, so each
// key and value vector is loaded once for all of them; it visits the union of their active
// blocks in the layout row qb = (lengths[b] - 1) / block_size, merging the heads' ascending CSR
// lists, and masks each head by its own row. Any block_size: a block is read in tiles of DN
// keys, the last one partial.
//
// Why this shape: decode reads each cached key once and does little arithmetic on it, so the
// point is coalesced loads of K and V shared by the group. Scores: one thread per (head i,
// key j), a dot product over HD from shared memory; a warp covers the DN = 32 keys of one head,
// so tile rows are padded to HD + 1 floats, putting the 32 keys' d-th values in 32 different
// banks. Softmax: one thread per head walks its DN scores. Accumulation: one thread per
// (head i, dim d), acc in registers (G * HD / 128 per thread). Static shared memory:
// DN (HD + 1) + G HD + G DN + 3 G floats, 22.6 KB at HD = 128.
template <typename scalar_t, int HD>
__device__ void decode(const scalar_t* q, const scalar_t* k, const scalar_t* v, float* out,
                       const int* row_ptr, const int* cols, const int* lengths, int H, int KV,
                       int NB, int block_size, float scale, long long k_sb, long long k_sh,
                       long long k_ss, long long v_sb, long long v_sh, long long v_ss) {
    constexpr int DN = 32;                    // keys per tile
    constexpr int G = 8;                      // query heads per CTA, at most
    constexpr int THREADS = 128;
    constexpr int ROW = HD + 1;               // padded row of the K/V tile
    constexpr int PAIRS = G * HD / THREADS;   // (head, dim) pairs per thread
    __shared__ float kv_tile[DN * ROW];       // K of the tile, then V
    __shared__ float q_s[G * HD];
    __shared__ float s_tile[G * DN];          // scores, then weights
    __shared__ float m_s[G], l_s[G], alpha_s[G];

    const int group = H / KV;
    const int b = blockIdx.y / KV, kv = blockIdx.y % KV;
    const int h0 = kv * group + blockIdx.x * G;               // first query head served
    const int heads = min(G, (kv + 1) * group - h0);
    const int position = lengths[b] - 1, qb = position / block_size;
    const scalar_t* k_head = k + b * k_sb + kv * k_sh;
    const scalar_t* v_head = v + b * v_sb + kv * v_sh;

    for (int e = threadIdx.x; e < G * HD; e += THREADS) {
        const int i = e / HD, d = e % HD;
        q_s[e] = i < heads ? to_float(q[((long long)b * H + h0 + i) * HD + d]) : 0.0f;
    }
    if (threadIdx.x < G) {
        m_s[threadIdx.x] = neg_inf();
        l_s[threadIdx.x] = 0.0f;
    }
    float acc[PAIRS];
#pragma unroll
    for (int it = 0; it < PAIRS; ++it) acc[it] = 0.0f;
    int next[G], end[G];                      // each head's place in its CSR list
#pragma unroll
    for (int i = 0; i < G; ++i) {
        next[i] = i < heads ? row_ptr[(h0 + i) * NB + qb] : 0;
        end[i] = i < heads ? row_ptr[(h0 + i) * NB + qb + 1] : 0;
    }
    __syncthreads();

    for (;;) {
        int kb = 0x7fffffff;                  // next block: the least at the front of a list
#pragma unroll
        for (int i = 0; i < G; ++i)
            if (next[i] < end[i]) kb = min(kb, cols[next[i]]);
        if (kb > qb) break;                   // lists done, or the rest in the future
        unsigned active = 0;                  // bit i: head i attends to block kb
#pragma unroll
        for (int i = 0; i < G; ++i)
            if (next[i] < end[i] && cols[next[i]] == kb) {
                active |= 1u << i;
                ++next[i];
            }
        const int key_end = min((kb + 1) * block_size, position + 1);
        for (int key0 = kb * block_size; key0 < key_end; key0 += DN) {
            const int count = min(DN, key_end - key0);
            load_tile<scalar_t, HD, DN, ROW, THREADS>(kv_tile, k_head, k_ss, key0, count);
            __syncthreads();
            for (int e = threadIdx.x; e < G * DN; e += THREADS) {   // s = scale * q_i . k_j
                const int i = e / DN, j = e % DN;
                float score = neg_inf();
                if ((active >> i & 1u) && j < count) {
                    float dot = 0.0f;
#pragma unroll 4
                    for (int d = 0; d < HD; ++d)
                        dot = fmaf(q_s[i * HD + d], kv_tile[j * ROW + d], dot);
                    score = __fmul_rn(dot, scale);
                }
                s_tile[e] = score;
            }
            __syncthreads();                                  // all done with K
            if (threadIdx.x < G) {                            // the softmax of head i
                const int i = threadIdx.x;
                float tile_max = neg_inf();
#pragma unroll 4
                for (int j = 0; j < DN; ++j) tile_max = fmaxf(tile_max, s_tile[i * DN + j]);
                const float m_new = fmaxf(m_s[i], tile_max);
                const float alpha = rescale_factor(m_s[i], m_new);
                float row_sum = 0.0f;
#pragma unroll 4
                for (int j = 0; j < DN; ++j) {
                    s_tile[i * DN + j] = key_weight(s_tile[i * DN + j], m_new);
                    row_sum += s_tile[i * DN + j];
                }
                l_s[i] = fmaf(l_s[i], alpha, row_sum);
                m_s[i] = m_new;
                alpha_s[i] = alpha;
            }
            load_tile<scalar_t, HD, DN, ROW, THREADS>(kv_tile, v_head, v_ss, key0, count);
            __syncthreads();
#pragma unroll
            for (int it = 0; it < PAIRS; ++it) {              // acc = acc alpha + sum_j p_j v_j
                const int e = threadIdx.x + THREADS * it, i = e / HD, d = e % HD;
                float pv = 0.0f;
#pragma unroll 4
                for (int j = 0; j < DN; ++j)
                    pv = fmaf(s_tile[i * DN + j], kv_tile[j * ROW + d], pv);
                acc[it] = fmaf(acc[it], alpha_s[i], pv);
            }
            __syncthreads();                                  // all done with V and weights
        }
    }
#pragma unroll
    for (int it = 0; it < PAIRS; ++it) {
        const int e = threadIdx.x + THREADS * it, i = e / HD, d = e % HD;
        if (i < heads) {
            const float l = l_s[i];
            out[((long long)b * H + h0 + i) * HD + d] = l > 0.0f ? acc[it] / l : 0.0f;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points, one per instantiation: blocksparse_prefill_<dtype>_hd<HD>_t<TILE>, launched
// with 4 * TILE threads, and blocksparse_decode_<dtype>_hd<HD>, launched with 128 threads.

#define PREFILL_PARAMS(scalar_t)                                                               \
    const scalar_t *q, const scalar_t *k, const scalar_t *v, float *out, const int *row_ptr,   \
        const int *cols, int H, int KV, int T, int NB, int block_size, float scale, int past,  \
        long long k_sb, long long k_sh, long long k_ss, long long v_sb, long long v_sh,         \
        long long v_ss
#define PREFILL_ARGS                                                                           \
    q, k, v, out, row_ptr, cols, H, KV, T, NB, block_size, scale, past, k_sb, k_sh, k_ss, v_sb, \
        v_sh, v_ss
#define DECODE_PARAMS(scalar_t)                                                                \
    const scalar_t *q, const scalar_t *k, const scalar_t *v, float *out, const int *row_ptr,   \
        const int *cols, const int *lengths, int H, int KV, int NB, int block_size,            \
        float scale, long long k_sb, long long k_sh, long long k_ss, long long v_sb,           \
        long long v_sh, long long v_ss
#define DECODE_ARGS                                                                            \
    q, k, v, out, row_ptr, cols, lengths, H, KV, NB, block_size, scale, k_sb, k_sh, k_ss,      \
        v_sb, v_sh, v_ss

extern "C" __global__ void __launch_bounds__(64) blocksparse_prefill_f32_hd16_t16(
    PREFILL_PARAMS(float)) { prefill<float, 16, 16>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(64) blocksparse_prefill_f32_hd32_t16(
    PREFILL_PARAMS(float)) { prefill<float, 32, 16>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(64) blocksparse_prefill_f32_hd64_t16(
    PREFILL_PARAMS(float)) { prefill<float, 64, 16>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(64) blocksparse_prefill_f32_hd96_t16(
    PREFILL_PARAMS(float)) { prefill<float, 96, 16>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(64) blocksparse_prefill_f32_hd128_t16(
    PREFILL_PARAMS(float)) { prefill<float, 128, 16>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(256) blocksparse_prefill_f32_hd16_t64(
    PREFILL_PARAMS(float)) { prefill<float, 16, 64>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(256) blocksparse_prefill_f32_hd32_t64(
    PREFILL_PARAMS(float)) { prefill<float, 32, 64>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(256) blocksparse_prefill_f32_hd64_t64(
    PREFILL_PARAMS(float)) { prefill<float, 64, 64>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(256) blocksparse_prefill_f32_hd96_t64(
    PREFILL_PARAMS(float)) { prefill<float, 96, 64>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(256) blocksparse_prefill_f32_hd128_t64(
    PREFILL_PARAMS(float)) { prefill<float, 128, 64>(PREFILL_ARGS); }

extern "C" __global__ void __launch_bounds__(64) blocksparse_prefill_bf16_hd16_t16(
    PREFILL_PARAMS(bf16)) { prefill<bf16, 16, 16>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(64) blocksparse_prefill_bf16_hd32_t16(
    PREFILL_PARAMS(bf16)) { prefill<bf16, 32, 16>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(64) blocksparse_prefill_bf16_hd64_t16(
    PREFILL_PARAMS(bf16)) { prefill<bf16, 64, 16>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(64) blocksparse_prefill_bf16_hd96_t16(
    PREFILL_PARAMS(bf16)) { prefill<bf16, 96, 16>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(64) blocksparse_prefill_bf16_hd128_t16(
    PREFILL_PARAMS(bf16)) { prefill<bf16, 128, 16>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(256) blocksparse_prefill_bf16_hd16_t64(
    PREFILL_PARAMS(bf16)) { prefill<bf16, 16, 64>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(256) blocksparse_prefill_bf16_hd32_t64(
    PREFILL_PARAMS(bf16)) { prefill<bf16, 32, 64>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(256) blocksparse_prefill_bf16_hd64_t64(
    PREFILL_PARAMS(bf16)) { prefill<bf16, 64, 64>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(256) blocksparse_prefill_bf16_hd96_t64(
    PREFILL_PARAMS(bf16)) { prefill<bf16, 96, 64>(PREFILL_ARGS); }
extern "C" __global__ void __launch_bounds__(256) blocksparse_prefill_bf16_hd128_t64(
    PREFILL_PARAMS(bf16)) { prefill<bf16, 128, 64>(PREFILL_ARGS); }

extern "C" __global__ void __launch_bounds__(128) blocksparse_decode_f32_hd16(
    DECODE_PARAMS(float)) { decode<float, 16>(DECODE_ARGS); }
extern "C" __global__ void __launch_bounds__(128) blocksparse_decode_f32_hd32(
    DECODE_PARAMS(float)) { decode<float, 32>(DECODE_ARGS); }
extern "C" __global__ void __launch_bounds__(128) blocksparse_decode_f32_hd64(
    DECODE_PARAMS(float)) { decode<float, 64>(DECODE_ARGS); }
extern "C" __global__ void __launch_bounds__(128) blocksparse_decode_f32_hd96(
    DECODE_PARAMS(float)) { decode<float, 96>(DECODE_ARGS); }
extern "C" __global__ void __launch_bounds__(128) blocksparse_decode_f32_hd128(
    DECODE_PARAMS(float)) { decode<float, 128>(DECODE_ARGS); }

extern "C" __global__ void __launch_bounds__(128) blocksparse_decode_bf16_hd16(
    DECODE_PARAMS(bf16)) { decode<bf16, 16>(DECODE_ARGS); }
extern "C" __global__ void __launch_bounds__(128) blocksparse_decode_bf16_hd32(
    DECODE_PARAMS(bf16)) { decode<bf16, 32>(DECODE_ARGS); }
extern "C" __global__ void __launch_bounds__(128) blocksparse_decode_bf16_hd64(
    DECODE_PARAMS(bf16)) { decode<bf16, 64>(DECODE_ARGS); }
extern "C" __global__ void __launch_bounds__(128) blocksparse_decode_bf16_hd96(
    DECODE_PARAMS(bf16)) { decode<bf16, 96>(DECODE_ARGS); }
extern "C" __global__ void __launch_bounds__(128) blocksparse_decode_bf16_hd128(
    DECODE_PARAMS(bf16)) { decode<bf16, 128>(DECODE_ARGS); }
