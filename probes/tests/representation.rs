//! Representation similarity against the authors' own formulations, computed by
//! `tools/representation_fixtures.py` in float64 from n × n Gram matrices (CKA, Kornblith et al.)
//! and from a sorted similarity matrix (mutual k-NN, platonic-rep) on the same float16 values;
//! the centroid modality gap as Liang et al.'s code measures it.

mod common;

use common::{f16_to_f32, fixture_dir};
use gapprobe_probes::representation::{centroid_gap, debiased_linear_cka, linear_cka, mutual_knn};
use gapprobe_probes::similarity;
use ndarray::Array2;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Reference {
    name: String,
    n: usize,
    dx: usize,
    dy: usize,
    k: usize,
    linear_cka: f64,
    debiased_cka: f64,
    mutual_knn: f64,
    /// Present for cases whose two sides have the same width.
    centroid_gap: Option<f64>,
}

const CASES: [&str; 6] = [
    "projected_n120",
    "projected_wide_n40",
    "subset_n80",
    "unrelated_n150",
    "shifted_n100",
    "unrelated_same_width_n60",
];

fn load(name: &str) -> (Reference, Array2<f32>, Array2<f32>) {
    let dir = fixture_dir().join("representation");
    let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("fixture json");
    let r: Reference = serde_json::from_str(&text).expect("parse fixture");
    let raw = std::fs::read(dir.join(format!("{name}.f16"))).expect("fixture f16");
    let vals: Vec<f32> = raw
        .chunks_exact(2)
        .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
        .collect();
    assert_eq!(vals.len(), r.n * (r.dx + r.dy), "{name}: fixture size");
    let (x, y) = vals.split_at(r.n * r.dx);
    let x = Array2::from_shape_vec((r.n, r.dx), x.to_vec()).unwrap();
    let y = Array2::from_shape_vec((r.n, r.dy), y.to_vec()).unwrap();
    (r, x, y)
}

#[test]
fn ckas_match_the_gram_matrix_reference() {
    for name in CASES {
        let (r, x, y) = load(name);
        let biased = linear_cka(x.view(), y.view()).unwrap();
        let debiased = debiased_linear_cka(x.view(), y.view()).unwrap();
        // f32 products over at most 150 rows: agreement to well within 1e-6.
        assert!(
            (biased - r.linear_cka).abs() < 1e-6,
            "{}: linear CKA {biased} vs {}",
            r.name,
            r.linear_cka
        );
        assert!(
            (debiased - r.debiased_cka).abs() < 1e-6,
            "{}: debiased CKA {debiased} vs {}",
            r.name,
            r.debiased_cka
        );
        // CKA is symmetric.
        let swapped = linear_cka(y.view(), x.view()).unwrap();
        assert!((swapped - biased).abs() < 1e-6, "{}", r.name);
    }
}

#[test]
fn mutual_knn_matches_the_sorted_similarity_reference() {
    for name in CASES {
        let (r, x, y) = load(name);
        let got = mutual_knn(x.view(), y.view(), r.k).unwrap();
        // The fixtures keep every row's k-th and (k+1)-th similarity apart, so the neighbour
        // sets are the same ones: the fractions agree exactly (up to summation order).
        assert!(
            (got - r.mutual_knn).abs() < 1e-12,
            "{}: mutual k-NN {got} vs {}",
            r.name,
            r.mutual_knn
        );
        let all = similarity(x.view(), y.view(), r.k).unwrap();
        assert_eq!((all.n, all.k), (r.n, r.k));
        assert_eq!(all.mutual_knn, got);
    }
}

#[test]
fn centroid_gap_matches_the_normalised_means_reference() {
    let mut checked = 0;
    for name in CASES {
        let (r, x, y) = load(name);
        let all = similarity(x.view(), y.view(), r.k).unwrap();
        match r.centroid_gap {
            Some(want) => {
                let got = centroid_gap(x.view(), y.view()).unwrap();
                // f64 sums of f16 values: agreement to rounding.
                assert!((got - want).abs() < 1e-9, "{}: gap {got} vs {want}", r.name);
                assert_eq!(all.centroid_gap, Some(got), "{}", r.name);
                // Symmetric, and zero against itself.
                let swapped = centroid_gap(y.view(), x.view()).unwrap();
                assert!((swapped - got).abs() < 1e-12, "{}", r.name);
                assert!(centroid_gap(x.view(), x.view()).unwrap().abs() < 1e-12);
                checked += 1;
            }
            None => {
                assert_ne!(r.dx, r.dy, "{}", r.name);
                assert_eq!(all.centroid_gap, None, "{}: widths differ", r.name);
                let err = centroid_gap(x.view(), y.view()).unwrap_err().to_string();
                assert!(err.contains("widths"), "{err}");
            }
        }
    }
    assert_eq!(checked, 2, "both equal-width fixtures compared");
    // The shifted case moves one cloud off-centre; the unrelated one shares a centre (near 0).
    let (shifted, ..) = load("shifted_n100");
    let (unrelated, ..) = load("unrelated_same_width_n60");
    assert!(shifted.centroid_gap.unwrap() > 0.5 && unrelated.centroid_gap.unwrap() < 0.3);
}

#[test]
fn centroid_gap_names_a_row_without_direction() {
    let x = Array2::from_shape_vec((3, 2), vec![1.0, 0.0, 0.0, 0.0, 0.5, 0.5]).unwrap();
    let y = Array2::from_shape_vec((3, 2), vec![0.0, 1.0, 1.0, 1.0, 2.0, 0.0]).unwrap();
    let err = centroid_gap(x.view(), y.view()).unwrap_err().to_string();
    assert!(err.contains("x: row 1"), "{err}");
    let mut z = y.clone();
    z[[2, 1]] = f32::NAN;
    let err = centroid_gap(x.view().slice(ndarray::s![..1, ..]), z.view())
        .unwrap_err()
        .to_string();
    assert!(err.contains("y: row 2"), "{err}");
}
