// The weight products of decoding with 4-bit weights (tinyphi3/quant/q4.py's format), on the GPU.
//
// Three kernels, each mirrored line by line in NumPy by tinyphi3_gpu/linear_emulation.py (same
// names, same loops, the same float sums in the same order) and launched by tinyphi3_gpu/linear.py:
//
//   quantize_activations   x float32 [M, K] -> xq int8 [M, nb*block] (zero padded), dx float32
//                          [M, nb], and sx float32 [M, chunks]: sx = dx * (sum of the 32 levels of
//                          each chunk of 32 values), what the product needs besides.
//   q4_matvec_*            y [M, N] = x W^T for M = 1..8 rows of x (decode, batched decode),
//                          with integer dot products (__dp4a), reading each weight once.
//   q4_dequantize_*        tiles of W back to float32 rows [n, K] (quant.q4.dequantize_q4), for
//                          prefill, where cupy's matmul multiplies them.
//
// The product, per chunk c of 32 values of a row of W (block b holds block/32 chunks):
//
//     y[m, n] = sum over chunks c of  d dx isum + offset sx,   offset = -8 d  or  the block's min
//     isum = sum_k q[n, k] xq[m, k] (exact, int32),   d = d[n, b],  dx = dx[m, b],  sx = sx[m, c]
//
// which is quant.q4's sum over blocks, cut finer (it is linear in isum and sx). Each chunk is 4
// groups of 8 values; a group of one row is one 4-byte word of the packed layout, whose low
// nibbles (w & 0x0F0F0F0F) are values 8g..8g+3 and high nibbles ((w >> 4) & 0x0F0F0F0F) values
// 8g+4..8g+7: one __dp4a each against 4 int8 activations.
//
// No fast math: x / safe and rintf are IEEE (round to nearest even), so the levels equal NumPy's
// bit for bit. The float epilogue is written with explicit __fmul_rn and fmaf, so that the
// compiler contracts nothing on its own and the emulation can follow every rounding.

#include <cuda_fp16.h>

constexpr int ROWS_PER_TILE = 64;    // quant/layout.py: rows interleaved in the packed layout
constexpr int CHUNK = 32;            // values of K per chunk: 4 groups of 8
constexpr int WARPS = 8;             // q4_matvec: warps per CTA (256 threads)
constexpr int QUADS = 4;             // lanes that share a chunk: 4 rows each, 16 rows per CTA
constexpr int SLOTS = 32 / QUADS;    // chunks a warp reads at once (8)
constexpr int STRIP = 4 * QUADS;     // rows per CTA (16)
constexpr int MAX_M = 8;             // rows of x per matvec launch
constexpr int Q4_THREADS = 32 * WARPS;

__device__ __forceinline__ float half_bits_to_float(unsigned int bits) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
}

// ---- quantize_activations ----------------------------------------------------------------------
//
// Grid M ceil(nb / 4) CTAs of 128 threads: CTA `cta` serves row m = cta / per_row of x, and its
// warp w rounds block b = 4 (cta % per_row) + w of that row. Lane `lane` holds the values
// k = b block + 32 j + lane (j < block/32; zero beyond K), so each read of x is 128 contiguous
// bytes. The block's max |x| is a butterfly of fmaxf over the warp (a max is exact in any order),
// each chunk's sum of levels a butterfly of integer adds (exact too).
//
//     dx = max|x| / 127,   xq = clip(rint(x / safe), -127, 127),   safe = dx, or 1 where dx = 0
//     sx = dx * (sum of the chunk's 32 levels)

constexpr int QUANTIZE_WARPS = 4;

extern "C" __global__ void __launch_bounds__(32 * QUANTIZE_WARPS)
quantize_activations(const float* __restrict__ x, signed char* __restrict__ xq,
                     float* __restrict__ dx, float* __restrict__ sx, int K, int block, int nb) {
    const int per_row = (nb + QUANTIZE_WARPS - 1) / QUANTIZE_WARPS;    // CTAs per row of x
    const int m = blockIdx.x / per_row;
    const int b = (blockIdx.x % per_row) * QUANTIZE_WARPS + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (b >= nb) return;                                    // a whole warp leaves together
    const int per_block = block / CHUNK;                    // chunks per block (1, 2 or 4)
    const int chunks = nb * per_block;
    const float* x_row = x + static_cast<long long>(m) * K;
    signed char* xq_row = xq + static_cast<long long>(m) * chunks * CHUNK;

    float top = 0.0f;                                       // this lane's max |x|
    for (int j = 0; j < per_block; ++j) {
        const int k = b * block + CHUNK * j + lane;
        const float v = k < K ? x_row[k] : 0.0f;
        top = fmaxf(top, fabsf(v));
    }
    for (int mask = 16; mask > 0; mask /= 2)                // every lane ends with the block's max
        top = fmaxf(top, __shfl_xor_sync(0xffffffffu, top, mask));
    const float scale = top / 127.0f;                       // IEEE division, as NumPy's
    const float safe = scale == 0.0f ? 1.0f : scale;

    for (int j = 0; j < per_block; ++j) {
        const int k = b * block + CHUNK * j + lane;
        const float v = k < K ? x_row[k] : 0.0f;
        const float level = fminf(fmaxf(rintf(v / safe), -127.0f), 127.0f);
        xq_row[k] = static_cast<signed char>(level);        // the padding (k >= K) gets 0
        int total = static_cast<int>(level);
        for (int mask = 16; mask > 0; mask /= 2)
            total += __shfl_xor_sync(0xffffffffu, total, mask);
        if (lane == 0)
            sx[static_cast<long long>(m) * chunks + b * per_block + j] =
                __fmul_rn(scale, static_cast<float>(total));
    }
    if (lane == 0) dx[static_cast<long long>(m) * nb + b] = scale;
}

// ---- q4_matvec ---------------------------------------------------------------------------------
//
// Why this shape. Decoding reads every weight once and does little with it, so the kernel must
// keep enough bytes in flight to run at the memory's bandwidth (H200: ~4.8 TB/s at ~0.6 us
// latency, ~3 MB in flight, ~20 KB per SM) and must start enough CTAs that every one of the
// 132 SMs has some: a CTA per tile of 64 rows gives only 48 CTAs at N = 3072. So
//
//   - a CTA owns a strip of 16 rows (a quarter of a tile): grid.x = 4 nt, 192 CTAs at N = 3072,
//     512 at N = 8192;
//   - its 8 warps split K: the 64 "slices" (warp, slot) take chunks c = slice, slice + 64, ...,
//     so K is split finely enough to keep every slice busy at K = 3072 (96 chunks) and the
//     float epilogue runs once per chunk (a block of 128 has 4: a little more float work, in
//     exchange for even shares of K whatever the block);
//   - a lane = (slot, quad): its 4 rows are 4 quad .. 4 quad + 3 of the strip, read as one 16-byte
//     load per group (4 consecutive rows' words of the same group); the 4 quads of a slot read 64
//     contiguous bytes, 2 whole 32-byte sectors, and a lane has a chunk's 4 loads (64 bytes) in
//     flight before it needs them: 192 CTAs x 256 lanes x 64 B = 3 MB;
//   - x's M rows are a template parameter: each weight word, once loaded, is multiplied with all
//     M rows (M x 2 __dp4a), so batched decode reads W once. The activations (32 bytes per row
//     and chunk) are read through the read-only cache: the 4 lanes of a slot read the same ones.
//
// Reduction: each lane's acc[m][j] (its rows, its chunks) is summed over the 8 slots of its warp
// by a butterfly of shuffles (lane ^ 4, ^ 8, ^ 16), then over the 8 warps through shared memory
// (partial[WARPS][M][16], 4 KB at M = 8), by 16 M threads that add warps 0..7 in order.
//
// __launch_bounds__(256, 2): at most 128 registers a thread, so that two CTAs share an SM even at
// M = 8 (left alone, ptxas takes ~170 there, one CTA per SM; capped, it spills a few bytes in
// one or two of the M = 7, 8 instantiations, which the L1 cache holds).

template <int M, int BLOCK, bool MINMAX>
__device__ __forceinline__ void q4_matvec(const signed char* __restrict__ xq,
                                          const float* __restrict__ dx,
                                          const float* __restrict__ sx,
                                          const uint4* __restrict__ packed,
                                          const unsigned short* __restrict__ scales,
                                          const unsigned short* __restrict__ mins,
                                          float* __restrict__ y, int N, int chunks) {
    static_assert(1 <= M && M <= MAX_M && BLOCK % CHUNK == 0, "M rows of x, whole chunks");
    constexpr int PER_BLOCK = BLOCK / CHUNK;                // chunks per block
    const int nb = chunks / PER_BLOCK;
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int quad = lane % QUADS;                          // rows 4 quad .. 4 quad + 3
    const int slot = lane / QUADS;
    const int slice = warp * SLOTS + slot;                  // 0 .. 63
    const int t = blockIdx.x / (ROWS_PER_TILE / STRIP);     // the tile
    const int r = (blockIdx.x % (ROWS_PER_TILE / STRIP)) * STRIP + 4 * quad;   // first row in it

    // Every loop over m, i, j has a constant count and is unrolled, so that acc, w, isum and xw
    // live in registers.
    float acc[M][4];
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[m][j] = 0.0f;
    }

    for (int c = slice; c < chunks; c += WARPS * SLOTS) {
        const int b = c / PER_BLOCK;
        // the chunk's 4 groups (flat groups 4c .. 4c+3 of the tile) for rows r .. r+3: each a
        // uint4 of 4 rows' words, 64 bytes in flight; and block b's scales of those rows (8 bytes)
        uint4 w[4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
            w[i] = __ldg(packed + ((static_cast<long long>(t) * chunks + c) * 4 + i)
                                  * (ROWS_PER_TILE / 4) + r / 4);
        const long long s = (static_cast<long long>(t) * nb + b) * ROWS_PER_TILE + r;
        const uint2 d_bits = __ldg(reinterpret_cast<const uint2*>(scales + s));
        const unsigned int d_words[4] = {d_bits.x, d_bits.x >> 16, d_bits.y, d_bits.y >> 16};
        float d[4], offset[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            d[j] = half_bits_to_float(d_words[j]);          // (the low 16 bits)
            offset[j] = -8.0f * d[j];                       // exact
        }
        if (MINMAX) {
            const uint2 min_bits = __ldg(reinterpret_cast<const uint2*>(mins + s));
            const unsigned int min_words[4] = {min_bits.x, min_bits.x >> 16,
                                               min_bits.y, min_bits.y >> 16};
#pragma unroll
            for (int j = 0; j < 4; ++j) offset[j] = half_bits_to_float(min_words[j]);
        }
#pragma unroll
        for (int m = 0; m < M; ++m) {
            const int4* x4 = reinterpret_cast<const int4*>(
                xq + (static_cast<long long>(m) * chunks + c) * CHUNK);
            const int4 xa = __ldg(x4), xb = __ldg(x4 + 1);  // xq[m, 32c .. 32c + 31]
            const int xw[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
            int isum[4] = {0, 0, 0, 0};
#pragma unroll
            for (int i = 0; i < 4; ++i) {                   // group 4c + i: values 8i .. 8i+7
                const unsigned int words[4] = {w[i].x, w[i].y, w[i].z, w[i].w};
#pragma unroll
                for (int j = 0; j < 4; ++j) {               // row r + j
                    const int low = static_cast<int>(words[j] & 0x0F0F0F0Fu);        // 8i .. 8i+3
                    const int high = static_cast<int>((words[j] >> 4) & 0x0F0F0F0Fu);  // +4 .. +7
                    isum[j] = __dp4a(low, xw[2 * i], isum[j]);
                    isum[j] = __dp4a(high, xw[2 * i + 1], isum[j]);
                }
            }
            // epilogue: acc += d (dx isum) + offset sx
            const float dx_mb = __ldg(dx + m * nb + b), sx_mc = __ldg(sx + m * chunks + c);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const float xs = __fmul_rn(dx_mb, static_cast<float>(isum[j]));
                acc[m][j] = fmaf(d[j], xs, acc[m][j]);
                acc[m][j] = fmaf(offset[j], sx_mc, acc[m][j]);
            }
        }
    }

    // sum over the 8 slots of the warp (lanes with the same quad hold the same rows): afterwards
    // every lane holds its quad's sum, since a + b = b + a
#pragma unroll
    for (int mask = QUADS; mask < 32; mask *= 2) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[m][j] += __shfl_xor_sync(0xffffffffu, acc[m][j], mask);
        }
    }

    // then over the 8 warps, in shared memory, each sum in the order of the warps
    __shared__ float partial[WARPS][M][STRIP];
    if (slot == 0) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
#pragma unroll
            for (int j = 0; j < 4; ++j) partial[warp][m][4 * quad + j] = acc[m][j];
        }
    }
    __syncthreads();
    if (threadIdx.x < M * STRIP) {
        const int m = threadIdx.x / STRIP;
        const int row = threadIdx.x % STRIP;
        float total = 0.0f;
        for (int other = 0; other < WARPS; ++other) total += partial[other][m][row];
        const int n = blockIdx.x * STRIP + row;             // strip blockIdx.x of 16 rows
        if (n < N) y[static_cast<long long>(m) * N + n] = total;
    }
}

// One entry point per (scheme, block, M), each written out so that Python finds it by name:
// q4_matvec_{sym,minmax}_b{32,64,128}_m{1..8}.
#define Q4_MATVEC_PARAMS const signed char* xq, const float* dx, const float* sx, \
    const uint4* packed, const unsigned short* scales, const unsigned short* mins, float* y, \
    int N, int chunks
#define Q4_MATVEC_ARGS xq, dx, sx, packed, scales, mins, y, N, chunks

extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b32_m1(Q4_MATVEC_PARAMS) { q4_matvec<1, 32, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b32_m2(Q4_MATVEC_PARAMS) { q4_matvec<2, 32, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b32_m3(Q4_MATVEC_PARAMS) { q4_matvec<3, 32, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b32_m4(Q4_MATVEC_PARAMS) { q4_matvec<4, 32, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b32_m5(Q4_MATVEC_PARAMS) { q4_matvec<5, 32, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b32_m6(Q4_MATVEC_PARAMS) { q4_matvec<6, 32, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b32_m7(Q4_MATVEC_PARAMS) { q4_matvec<7, 32, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b32_m8(Q4_MATVEC_PARAMS) { q4_matvec<8, 32, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b64_m1(Q4_MATVEC_PARAMS) { q4_matvec<1, 64, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b64_m2(Q4_MATVEC_PARAMS) { q4_matvec<2, 64, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b64_m3(Q4_MATVEC_PARAMS) { q4_matvec<3, 64, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b64_m4(Q4_MATVEC_PARAMS) { q4_matvec<4, 64, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b64_m5(Q4_MATVEC_PARAMS) { q4_matvec<5, 64, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b64_m6(Q4_MATVEC_PARAMS) { q4_matvec<6, 64, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b64_m7(Q4_MATVEC_PARAMS) { q4_matvec<7, 64, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b64_m8(Q4_MATVEC_PARAMS) { q4_matvec<8, 64, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b128_m1(Q4_MATVEC_PARAMS) { q4_matvec<1, 128, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b128_m2(Q4_MATVEC_PARAMS) { q4_matvec<2, 128, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b128_m3(Q4_MATVEC_PARAMS) { q4_matvec<3, 128, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b128_m4(Q4_MATVEC_PARAMS) { q4_matvec<4, 128, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b128_m5(Q4_MATVEC_PARAMS) { q4_matvec<5, 128, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b128_m6(Q4_MATVEC_PARAMS) { q4_matvec<6, 128, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b128_m7(Q4_MATVEC_PARAMS) { q4_matvec<7, 128, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_sym_b128_m8(Q4_MATVEC_PARAMS) { q4_matvec<8, 128, false>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b32_m1(Q4_MATVEC_PARAMS) { q4_matvec<1, 32, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b32_m2(Q4_MATVEC_PARAMS) { q4_matvec<2, 32, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b32_m3(Q4_MATVEC_PARAMS) { q4_matvec<3, 32, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b32_m4(Q4_MATVEC_PARAMS) { q4_matvec<4, 32, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b32_m5(Q4_MATVEC_PARAMS) { q4_matvec<5, 32, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b32_m6(Q4_MATVEC_PARAMS) { q4_matvec<6, 32, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b32_m7(Q4_MATVEC_PARAMS) { q4_matvec<7, 32, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b32_m8(Q4_MATVEC_PARAMS) { q4_matvec<8, 32, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b64_m1(Q4_MATVEC_PARAMS) { q4_matvec<1, 64, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b64_m2(Q4_MATVEC_PARAMS) { q4_matvec<2, 64, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b64_m3(Q4_MATVEC_PARAMS) { q4_matvec<3, 64, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b64_m4(Q4_MATVEC_PARAMS) { q4_matvec<4, 64, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b64_m5(Q4_MATVEC_PARAMS) { q4_matvec<5, 64, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b64_m6(Q4_MATVEC_PARAMS) { q4_matvec<6, 64, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b64_m7(Q4_MATVEC_PARAMS) { q4_matvec<7, 64, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b64_m8(Q4_MATVEC_PARAMS) { q4_matvec<8, 64, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b128_m1(Q4_MATVEC_PARAMS) { q4_matvec<1, 128, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b128_m2(Q4_MATVEC_PARAMS) { q4_matvec<2, 128, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b128_m3(Q4_MATVEC_PARAMS) { q4_matvec<3, 128, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b128_m4(Q4_MATVEC_PARAMS) { q4_matvec<4, 128, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b128_m5(Q4_MATVEC_PARAMS) { q4_matvec<5, 128, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b128_m6(Q4_MATVEC_PARAMS) { q4_matvec<6, 128, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b128_m7(Q4_MATVEC_PARAMS) { q4_matvec<7, 128, true>(Q4_MATVEC_ARGS); }
extern "C" __global__ void __launch_bounds__(Q4_THREADS, 2)
q4_matvec_minmax_b128_m8(Q4_MATVEC_PARAMS) { q4_matvec<8, 128, true>(Q4_MATVEC_ARGS); }

// ---- q4_dequantize -----------------------------------------------------------------------------
//
// W's rows of tiles first .. first + tiles - 1 in float32 [n, K] (quant.q4.dequantize_q4):
//
//     w = d q + offset,   offset = -8 d (symmetric) or the block's min (minmax)
//
// One thread per packed word: thread i of the launch reads word i of the tiles' packed bytes
// (consecutive threads, consecutive rows of one group: every read coalesced) and writes that row's
// 8 values of the group (32 contiguous bytes). d q is exact in float32 (11 by 4 significant bits),
// so fmaf rounds once, as NumPy's d * q + offset does: bit-equal. 256 threads per CTA, grid
// ceil(tiles * groups * 64 / 256), groups = K's groups of 8 per row (padding included).

constexpr int DEQUANTIZE_THREADS = 256;

template <bool MINMAX>
__device__ __forceinline__ void q4_dequantize(const unsigned int* __restrict__ packed,
                                              const unsigned short* __restrict__ scales,
                                              const unsigned short* __restrict__ mins,
                                              float* __restrict__ w, int first, int tiles,
                                              int n_rows, int K, int block, int nb) {
    const int groups = nb * block / 8;                      // groups per row
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= static_cast<long long>(tiles) * groups * ROWS_PER_TILE) return;
    const int r = static_cast<int>(i % ROWS_PER_TILE);      // row in its tile
    const int fg = static_cast<int>((i / ROWS_PER_TILE) % groups);    // flat group: b G + g
    const int tile = static_cast<int>(i / (static_cast<long long>(ROWS_PER_TILE) * groups));
    const int n = tile * ROWS_PER_TILE + r;                 // row of the output
    if (n >= n_rows) return;                                // the last tile's padding rows
    const int t = first + tile;
    const int b = fg / (block / 8);
    const unsigned int word = packed[(static_cast<long long>(t) * groups + fg) * ROWS_PER_TILE + r];
    const long long s = (static_cast<long long>(t) * nb + b) * ROWS_PER_TILE + r;
    const float d = half_bits_to_float(scales[s]);
    const float offset = MINMAX ? half_bits_to_float(mins[s]) : -8.0f * d;
    float* w_row = w + static_cast<long long>(n) * K;
    for (int v = 0; v < 8; ++v) {                           // byte v % 4, low nibbles first
        const int k = fg * 8 + v;
        const unsigned int q = (word >> (8 * (v % 4) + 4 * (v / 4))) & 0xFu;
        if (k < K) w_row[k] = fmaf(d, static_cast<float>(q), offset);
    }
}

#define Q4_DEQUANTIZE_PARAMS const unsigned int* packed, const unsigned short* scales, \
    const unsigned short* mins, float* w, int first, int tiles, int n_rows, int K, int block, int nb
#define Q4_DEQUANTIZE_ARGS packed, scales, mins, w, first, tiles, n_rows, K, block, nb

extern "C" __global__ void __launch_bounds__(DEQUANTIZE_THREADS)
q4_dequantize_sym(Q4_DEQUANTIZE_PARAMS) { q4_dequantize<false>(Q4_DEQUANTIZE_ARGS); }
extern "C" __global__ void __launch_bounds__(DEQUANTIZE_THREADS)
q4_dequantize_minmax(Q4_DEQUANTIZE_PARAMS) { q4_dequantize<true>(Q4_DEQUANTIZE_ARGS); }
