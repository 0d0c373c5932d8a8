//! The probe solver's two f32 products at CUB's shape (5994 × 1025 times 1025 × 200, and the
//! transposed one): what bounds the CPU probe's speed. Times the call the solver makes
//! (`DenseMatrix::mul` / `mul_t`, the `gemm` crate), other ways of making the same products with
//! `gemm`, and ndarray's `dot` (matrixmultiply, as this workspace builds it), in interleaved
//! rounds so that a busy machine affects every variant alike; prints medians and quartiles.
//!
//! `cargo run --release -p gapprobe-probes --example gemm_bench [-- ROUNDS]` (NumPy's OpenBLAS on
//! the same shapes: see docs/performance.md).

use gapprobe_probes::products::DenseMatrix;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// `dst (m × n) = lhs (m × k) · rhs (k × n)` with `(ptr, column stride, row stride)` operands and
/// a `(column stride, row stride)` destination.
///
/// # Safety
/// The strides must address elements inside the slices the pointers come from.
unsafe fn strided(
    (m, n, k): (usize, usize, usize),
    (dst, dst_cs, dst_rs): (*mut f32, isize, isize),
    (lhs, lhs_cs, lhs_rs): (*const f32, isize, isize),
    (rhs, rhs_cs, rhs_rs): (*const f32, isize, isize),
    parallelism: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs,
        dst_rs,
        false,
        lhs,
        lhs_cs,
        lhs_rs,
        rhs,
        rhs_cs,
        rhs_rs,
        0.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}

/// All of rayon's threads for one `gemm` call.
fn all_threads() -> gemm::Parallelism {
    gemm::Parallelism::Rayon(rayon::current_num_threads())
}

/// `dst = a · b` (row-major `m × k` by `k × n`) with `a`'s rows (and `dst`'s) split into two
/// halves, one `gemm` call each under `rayon::join`, each call with `parallelism`.
fn split_rows(
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    dst: &mut [f32],
    parallelism: gemm::Parallelism,
) {
    let half = m / 2;
    let (d1, d2) = dst.split_at_mut(half * n);
    let call = |rows: usize, a: &[f32], d: &mut [f32]| unsafe {
        // SAFETY: `a` holds rows × k, `b` k × n and `d` rows × n values, all row-major.
        strided(
            (rows, n, k),
            (d.as_mut_ptr(), 1, n as isize),
            (a.as_ptr(), 1, k as isize),
            (b.as_ptr(), 1, n as isize),
            parallelism,
        )
    };
    rayon::join(
        || call(half, &a[..half * k], d1),
        || call(m - half, &a[half * k..], d2),
    );
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(12);
    let (n, d, k) = (5994usize, 1025usize, 200usize);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut random =
        |len: usize| -> Vec<f32> { (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect() };
    let (x, m, r) = (random(n * d), random(d * k), random(n * k));
    let data = DenseMatrix::from_row_major(x.clone(), n, d, &candle_core::Device::Cpu)?;
    let mut xt = vec![0f32; n * d];
    for i in 0..n {
        for j in 0..d {
            xt[j * n + i] = x[i * d + j];
        }
    }
    let (xa, ma) = (
        Array2::from_shape_vec((n, d), x.clone())?,
        Array2::from_shape_vec((d, k), m.clone())?,
    );
    let (xta, ra) = (
        Array2::from_shape_vec((d, n), xt.clone())?,
        Array2::from_shape_vec((n, k), r.clone())?,
    );
    let mut z = vec![0f32; n * k];
    let mut g = vec![0f32; d * k];
    let (zp, gp) = (z.as_mut_ptr(), g.as_mut_ptr());
    let (di, ki) = (d as isize, k as isize);
    type Variant<'a> = (&'a str, Box<dyn FnMut() + 'a>);
    let mut variants: Vec<Variant> = vec![
        (
            "X·M   solver (DenseMatrix::mul)",
            Box::new(|| {
                data.mul(&m, k, unsafe { std::slice::from_raw_parts_mut(zp, n * k) })
                    .unwrap()
            }),
        ),
        // SAFETY (all strided calls): row-major n × d, d × k, n × k and d × k buffers above.
        (
            "X·M   as (Mᵀ·Xᵀ)ᵀ",
            Box::new(|| unsafe {
                strided(
                    (k, n, d),
                    (zp, ki, 1),
                    (m.as_ptr(), ki, 1),
                    (x.as_ptr(), di, 1),
                    all_threads(),
                )
            }),
        ),
        (
            "X·M   rows split, 2 calls × 2 threads",
            Box::new(|| {
                let z = unsafe { std::slice::from_raw_parts_mut(zp, n * k) };
                split_rows(&x, &m, (n, d, k), z, all_threads())
            }),
        ),
        (
            "X·M   rows split, 2 calls × 1 thread",
            Box::new(|| {
                let z = unsafe { std::slice::from_raw_parts_mut(zp, n * k) };
                split_rows(&x, &m, (n, d, k), z, gemm::Parallelism::None)
            }),
        ),
        (
            "X·M   ndarray dot",
            Box::new(|| {
                std::hint::black_box(xa.dot(&ma));
            }),
        ),
        (
            "Xᵀ·R  solver (DenseMatrix::mul_t)",
            Box::new(|| {
                data.mul_t(&r, k, unsafe { std::slice::from_raw_parts_mut(gp, d * k) })
                    .unwrap()
            }),
        ),
        (
            "Xᵀ·R  Xᵀ read through strides",
            Box::new(|| unsafe {
                strided(
                    (d, k, n),
                    (gp, 1, ki),
                    (x.as_ptr(), di, 1),
                    (r.as_ptr(), 1, ki),
                    all_threads(),
                )
            }),
        ),
        (
            "Xᵀ·R  as (Rᵀ·X)ᵀ",
            Box::new(|| unsafe {
                strided(
                    (k, d, n),
                    (gp, ki, 1),
                    (r.as_ptr(), ki, 1),
                    (x.as_ptr(), 1, di),
                    all_threads(),
                )
            }),
        ),
        (
            "Xᵀ·R  rows split, 2 calls × 2 threads",
            Box::new(|| {
                let g = unsafe { std::slice::from_raw_parts_mut(gp, d * k) };
                split_rows(&xt, &r, (d, n, k), g, all_threads())
            }),
        ),
        (
            "Xᵀ·R  rows split, 2 calls × 1 thread",
            Box::new(|| {
                let g = unsafe { std::slice::from_raw_parts_mut(gp, d * k) };
                split_rows(&xt, &r, (d, n, k), g, gemm::Parallelism::None)
            }),
        ),
        (
            "Xᵀ·R  ndarray dot",
            Box::new(|| {
                std::hint::black_box(xta.dot(&ra));
            }),
        ),
    ];
    let flop = 2.0 * (n * d * k) as f64;
    let mut rates = vec![Vec::new(); variants.len()];
    for (_, f) in variants.iter_mut() {
        f(); // warm-up
    }
    for _ in 0..rounds {
        for ((_, f), out) in variants.iter_mut().zip(&mut rates) {
            let t = Instant::now();
            for _ in 0..3 {
                f();
            }
            out.push(flop * 3.0 / t.elapsed().as_secs_f64() / 1e9);
        }
    }
    println!(
        "{rounds} rounds, {} threads, GFLOP/s (2·5994·1025·200 per product): median [q25, q75]",
        rayon::current_num_threads()
    );
    for ((name, _), mut v) in variants.iter().zip(rates) {
        v.sort_by(f64::total_cmp);
        let q = |p: usize| v[(v.len() - 1) * p / 4];
        println!("{name:34} {:5.0}  [{:.0}, {:.0}]", q(2), q(1), q(3));
    }
    Ok(())
}
