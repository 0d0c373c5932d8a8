//! Classification metrics from scores.

use ndarray::ArrayView2;

/// Metrics on a labelled set.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub top1: f64,
    pub top5: f64,
    pub mean_per_class: f64,
    pub macro_f1: f64,
    /// `None` for a class absent from `y`.
    pub per_class_accuracy: Vec<Option<f64>>,
    /// `confusion[true][pred]`.
    pub confusion: Vec<Vec<u32>>,
    /// Whether each sample's top-1 prediction is right (for the bootstrap).
    pub correct: Vec<bool>,
}

/// Whether `y` is among the `k` highest scores of `row` (ties counted pessimistically:
/// a score equal to the true class's score ranks ahead only when its index is lower).
pub fn in_top_k(row: &[f32], y: usize, k: usize) -> bool {
    let sy = row[y];
    let ahead = row
        .iter()
        .enumerate()
        .filter(|&(j, &s)| s > sy || (s == sy && j < y))
        .count();
    ahead < k
}

/// Top-1 accuracy only.
pub fn top1(pred: &[u32], y: &[u32]) -> f64 {
    if y.is_empty() {
        return f64::NAN;
    }
    pred.iter().zip(y).filter(|(p, t)| p == t).count() as f64 / y.len() as f64
}

/// Compute all metrics from `scores` (`n × n_classes`, higher is better) and true labels.
///
/// * top-5 uses `min(5, n_classes)`.
/// * mean per-class accuracy averages over classes present in `y`.
/// * macro-F1 follows scikit-learn's `f1_score(average="macro")`: it averages over classes that
///   occur in `y` or in the predictions, an F1 with zero precision and recall counting as 0.
pub fn compute(scores: ArrayView2<f32>, y: &[u32], n_classes: usize) -> Metrics {
    let n = y.len();
    let k5 = n_classes.min(5);
    let mut confusion = vec![vec![0u32; n_classes]; n_classes];
    let mut correct = Vec::with_capacity(n);
    let mut hits5 = 0usize;
    for (row, &t) in scores.outer_iter().zip(y) {
        let r = row.to_vec();
        let p = crate::logistic::argmax(&r);
        confusion[t as usize][p] += 1;
        correct.push(p == t as usize);
        if in_top_k(&r, t as usize, k5) {
            hits5 += 1;
        }
    }
    let nf = n as f64;
    let top1 = correct.iter().filter(|&&c| c).count() as f64 / nf;
    let top5 = hits5 as f64 / nf;
    let per_class_accuracy: Vec<Option<f64>> = (0..n_classes)
        .map(|k| {
            let tot: u32 = confusion[k].iter().sum();
            (tot > 0).then(|| confusion[k][k] as f64 / tot as f64)
        })
        .collect();
    let present: Vec<f64> = per_class_accuracy.iter().flatten().copied().collect();
    let mean_per_class = present.iter().sum::<f64>() / present.len() as f64;
    let mut f1s = Vec::new();
    for k in 0..n_classes {
        let tp = confusion[k][k] as f64;
        let support: u32 = confusion[k].iter().sum();
        let predicted: u32 = confusion.iter().map(|r| r[k]).sum();
        if support == 0 && predicted == 0 {
            continue;
        }
        let denom = support as f64 + predicted as f64;
        f1s.push(if tp == 0.0 { 0.0 } else { 2.0 * tp / denom });
    }
    let macro_f1 = f1s.iter().sum::<f64>() / f1s.len() as f64;
    Metrics {
        top1,
        top5,
        mean_per_class,
        macro_f1,
        per_class_accuracy,
        confusion,
        correct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn small_case_by_hand() {
        // 3 classes; predictions: 0,0,1,2,2 for truths 0,1,1,2,0
        let s = array![
            [0.9f32, 0.05, 0.05],
            [0.6, 0.3, 0.1],
            [0.1, 0.8, 0.1],
            [0.1, 0.2, 0.7],
            [0.2, 0.3, 0.5]
        ];
        let y = [0u32, 1, 1, 2, 0];
        let m = compute(s.view(), &y, 3);
        assert!((m.top1 - 0.6).abs() < 1e-12);
        assert_eq!(m.top5, 1.0);
        assert_eq!(
            m.confusion,
            vec![vec![1, 0, 1], vec![1, 1, 0], vec![0, 0, 1]]
        );
        assert_eq!(m.per_class_accuracy, vec![Some(0.5), Some(0.5), Some(1.0)]);
        assert!((m.mean_per_class - 2.0 / 3.0).abs() < 1e-12);
        // F1: class0 p=1/2 r=1/2 -> .5; class1 p=1 r=1/2 -> 2/3; class2 p=1/2 r=1 -> 2/3
        assert!((m.macro_f1 - (0.5 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn absent_class_is_none() {
        let s = array![[1.0f32, 0.0, 0.0], [0.0, 1.0, 0.0]];
        let m = compute(s.view(), &[0, 1], 3);
        assert_eq!(m.per_class_accuracy[2], None);
        assert_eq!(m.mean_per_class, 1.0);
        assert_eq!(m.macro_f1, 1.0);
    }
}
