//! Representation similarity at CUB's test-split shape: 5794 images, a 1024-wide vision layer
//! against a 4096-wide projector output (random features with shared structure), timed per
//! measure. `cargo run --release -p gapprobe-probes --example bench_similarity [-- ROWS]`.

use gapprobe_probes::representation::{linear_cka, mutual_knn};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5794);
    let (dx, dy) = (1024usize, 4096usize);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let x = Array2::from_shape_fn((n, dx), |_| rng.gen_range(-1.0f32..1.0));
    let mix = Array2::from_shape_fn((dx, dy), |_| rng.gen_range(-0.05f32..0.05));
    let mut y = x.dot(&mix);
    y.mapv_inplace(|v| v.max(0.0) + rng.gen_range(-0.1f32..0.1));
    let t = Instant::now();
    let cka = linear_cka(x.view(), y.view())?;
    let cka_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let knn = mutual_knn(x.view(), y.view(), 10)?;
    let knn_s = t.elapsed().as_secs_f64();
    println!(
        "n = {n}, {dx} vs {dy} columns, {} threads: linear + debiased CKA {cka:.4} in {cka_s:.2} s, \
         mutual k-NN@10 {knn:.4} in {knn_s:.2} s",
        rayon::current_num_threads()
    );
    Ok(())
}
