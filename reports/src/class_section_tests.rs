use crate::test_rows::{class_row, result_row};
use crate::{markdown_report, ClassRow, ReportContext, ResultRow};

const PRE: &str = "vision.layer[-2].patch.mean";
const POST: &str = "projector.mean";

/// Probes of dataset `d`: a layer sweep and the projector at the fine level, both stages at the
/// coarse level; few-shot rows that would be the best at each stage if they counted.
fn rows() -> Vec<ResultRow> {
    let few = |fp: &str, level: &str| ResultRow {
        shots: 4,
        draws: 3,
        ..result_row("d", fp, level, 0.99)
    };
    vec![
        few("vision.layer[-1].patch.mean", "fine"),
        result_row("d", PRE, "fine", 0.7),
        result_row("d", "vision.layer[-1].patch.mean", "fine", 0.6),
        result_row("d", POST, "fine", 0.5),
        few("projector.cls", "fine"),
        result_row("d", PRE, "coarse", 0.9),
        result_row("d", POST, "coarse", 0.95),
    ]
}

/// `k` of 30 test images right.
fn of30(k: u64) -> f64 {
    k as f64 / 30.0
}

/// Per-class rows of `rows()`: at the fine level 13 classes (one unchanged, one gained, eleven
/// lost, two of them by as much, which floating point does not quite make equal), at the coarse
/// level two (one gained, one unchanged); then rows that must change nothing.
fn classes(rows: &[ResultRow]) -> Vec<ClassRow> {
    let (pre, other_pre, post) = (&rows[1], &rows[2], &rows[3]);
    let mut out = Vec::new();
    let mut fine = |i: u64, name: &str, before: u64, after: u64| {
        out.push(class_row(pre, i, name, 30, of30(before)));
        out.push(class_row(post, i, name, 30, of30(after)));
    };
    fine(0, "c0", 27, 27);
    fine(1, "c1", 27, 30);
    for i in 2..=11 {
        // c6 drops 5 of 30 from lower down: in floating point a hair less than a|b below.
        let before = if i == 6 { 10 } else { 27 };
        fine(i, &format!("c{i}"), before, before + 1 - i);
    }
    fine(12, "a|b", 27, 22);
    let (pre, post) = (&rows[5], &rows[6]);
    out.push(class_row(pre, 0, "x", 4, 0.5));
    out.push(class_row(pre, 1, "y", 5, 0.8));
    out.push(class_row(post, 0, "x", 4, 0.75));
    out.push(class_row(post, 1, "y", 5, 0.8));
    // Another pre-projection point's classes, class indices the other stage lacks, a class
    // without test images, and a few-shot row's point: none of them counts.
    for i in 0..13 {
        out.push(class_row(other_pre, i, "lost", 30, 1.0));
    }
    out.push(class_row(&rows[1], 40, "pre only", 30, 1.0));
    out.push(class_row(&rows[3], 41, "post only", 30, 0.0));
    out.push(class_row(&rows[1], 42, "no images", 0, 1.0));
    out.push(class_row(&rows[3], 42, "no images", 0, 0.0));
    out.push(class_row(&rows[4], 0, "c0", 30, 0.0));
    out
}

#[test]
fn a_summary_per_level_and_the_largest_drops() {
    let rows = rows();
    let ctx = ReportContext {
        class_figure: "classes.png".into(),
        classes: classes(&rows),
        ..Default::default()
    };
    let md = markdown_report(&rows, &ctx);
    let want = "\n## Classes the projection loses\n\n\
        Each class's test accuracy (%) under the best pre-projection probe (before) and the best \
        post-projection probe (after) of each dataset and level, the pair the modality-gap table \
        compares; change = after − before in points, and the tables list the (at most 10) classes \
        with the largest drops. `per_class.csv` has every class of every probe.\n\n\
        ![classes the projection loses](classes.png)\n\n\
        **d · coarse** (`vision.layer[-2].patch.mean` → `projector.mean`): none of the 2 classes \
        loses accuracy, 1 gain, 1 unchanged; mean per-class change +12.5 points.\n\n\
        **d · fine** (`vision.layer[-2].patch.mean` → `projector.mean`): 11 of 13 classes lose \
        accuracy, 1 gain, 1 unchanged; mean per-class change -14.6 points.\n\n\
        | class | n test | before | after | change |\n\
        |---|---|---|---|---|\n\
        | c11 | 30 | 90.0 | 56.7 | -33.3 |\n\
        | c10 | 30 | 90.0 | 60.0 | -30.0 |\n\
        | c9 | 30 | 90.0 | 63.3 | -26.7 |\n\
        | c8 | 30 | 90.0 | 66.7 | -23.3 |\n\
        | c7 | 30 | 90.0 | 70.0 | -20.0 |\n\
        | c6 | 30 | 33.3 | 16.7 | -16.7 |\n\
        | a\\|b | 30 | 90.0 | 73.3 | -16.7 |\n\
        | c5 | 30 | 90.0 | 76.7 | -13.3 |\n\
        | c4 | 30 | 90.0 | 80.0 | -10.0 |\n\
        | c3 | 30 | 90.0 | 83.3 | -6.7 |\n\n\
        \n## Probe accuracy by layer\n";
    assert!(md.contains(want), "{want}\nmissing from:\n{md}");
    // After the modality-gap table, which compares the same pairs.
    let gap = md.find("## Modality gap").expect("the gap table");
    assert!(gap < md.find("## Classes").unwrap(), "{md}");
    assert!(md.contains("| d | fine | 70.0 | 50.0 | +20.0 |"), "{md}");
    // The smallest of the eleven drops is left out of the ten.
    assert!(!md.contains("| c2 |"), "{md}");
}

#[test]
fn no_section_without_class_rows_of_both_probes_and_no_figure_unless_named() {
    let rows = rows();
    let all = classes(&rows);
    let md = markdown_report(&rows, &ReportContext::default());
    assert!(!md.contains("## Classes"), "{md}");
    // Only the pre-projection probes' classes (and the rows that never count): no section.
    let pre_only: Vec<ClassRow> = all
        .iter()
        .filter(|c| c.stage == "pre-projection")
        .cloned()
        .collect();
    let ctx = ReportContext {
        class_figure: "classes.png".into(),
        classes: pre_only,
        ..Default::default()
    };
    assert!(!markdown_report(&rows, &ctx).contains("## Classes"));
    // The coarse level's classes alone: its summary and no figure line when none is named.
    let coarse: Vec<ClassRow> = all.into_iter().filter(|c| c.level == "coarse").collect();
    let ctx = ReportContext {
        classes: coarse,
        ..Default::default()
    };
    let md = markdown_report(&rows, &ctx);
    assert!(
        md.contains("every class of every probe.\n\n**d · coarse** (`vision.layer[-2].patch.mean` → `projector.mean`): none of the 2 classes loses accuracy, 1 gain, 1 unchanged; mean per-class change +12.5 points.\n\n\n## Probe accuracy by layer"),
        "{md}"
    );
    assert!(!md.contains("d · fine") && !md.contains("!["), "{md}");
}

#[test]
fn the_best_probe_of_each_stage_or_nothing() {
    // The best pre-projection probe of the fine level has no class rows: no panel, even though
    // another pre-projection probe has them.
    let mut rows = rows();
    let classes = classes(&rows);
    rows.push(result_row("d", "vision.layer[-3].patch.mean", "fine", 0.8));
    let ctx = ReportContext {
        classes,
        ..Default::default()
    };
    let md = markdown_report(&rows, &ctx);
    assert!(
        md.contains("**d · coarse**") && !md.contains("**d · fine**"),
        "{md}"
    );
}
