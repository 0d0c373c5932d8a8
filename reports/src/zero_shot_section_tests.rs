use crate::test_rows::{result_row, zero_shot_row as row};
use crate::{markdown_report, ReportContext, ZeroShotRow};

/// `r` as an answer of `model`.
fn of(model: &str, r: ZeroShotRow) -> ZeroShotRow {
    ZeroShotRow {
        model: model.into(),
        ..r
    }
}

/// cub with both arms at every level, dogs with the image arm at one level, inat with the text
/// arm at one of its two levels.
fn answers() -> Vec<ZeroShotRow> {
    vec![
        row("cub", "image", "fine", 0.0),
        row("cub", "image", "superordinate", 1.0),
        row("cub", "image", "coarse", 0.4),
        row("cub", "text", "superordinate", 1.0),
        row("cub", "text", "coarse", 0.55),
        row("cub", "text", "fine", 0.2),
        ZeroShotRow {
            n: 50,
            ..row("dogs", "image", "fine", 0.3)
        },
        row("inat", "image", "coarse", 0.4),
        row("inat", "image", "fine", 0.1),
        ZeroShotRow {
            n: 90,
            ..row("inat", "text", "fine", 0.25)
        },
    ]
}

#[test]
fn a_table_per_dataset_with_the_interval_f1_and_the_text_minus_image_gap() {
    let ctx = ReportContext {
        title: "T".into(),
        model: "m".into(),
        zero_shot: answers(),
        zero_shot_figure: "zero_shot.png".into(),
        ..Default::default()
    };
    let md = markdown_report(&[], &ctx);
    for want in [
        "\n## Zero-shot answers\n\nThe language model answers the prompt below once per test \
         image and label level, greedily (at most 32 new tokens),",
        "is within the first 20 words of the normalised answer.",
        "at the superordinate level any of the superordinate, coarse or fine labels, at the \
         coarse level the coarse or the fine one",
        "\n![zero-shot exact match by label level](zero_shot.png)\n",
        "**cub**\n\n\
         | level | image EM (95% CI) | text EM (95% CI) | text − image | image F1 | text F1 | n |\n\
         |---|---|---|---|---|---|---|\n\
         | superordinate | 100.0 (95.0–100.0) | 100.0 (95.0–100.0) | +0.0 | 100.0 | 100.0 | 100 |\n\
         | coarse | 40.0 (35.0–45.0) | 55.0 (50.0–60.0) | +15.0 | 70.0 | 77.5 | 100 |\n\
         | fine | 0.0 (0.0–5.0) | 20.0 (15.0–25.0) | +20.0 | 50.0 | 60.0 | 100 |\n\n",
        // One arm: no gap column, no other arm's columns.
        "**dogs**\n\n\
         | level | image EM (95% CI) | image F1 | n |\n\
         |---|---|---|---|\n\
         | fine | 30.0 (25.0–35.0) | 65.0 | 50 |\n\n",
        // A level without the text arm: dashes; arms asked different numbers of questions.
        "**inat**\n\n\
         | level | image EM (95% CI) | text EM (95% CI) | text − image | image F1 | text F1 | n |\n\
         |---|---|---|---|---|---|---|\n\
         | coarse | 40.0 (35.0–45.0) | – | – | 70.0 | – | 100 |\n\
         | fine | 10.0 (5.0–15.0) | 25.0 (20.0–30.0) | +15.0 | 55.0 | 62.5 | 100 / 90 |\n\n",
        "Prompt:\n\n```text\nWhat is the name of the {concept} in this image?\n```\n",
        "Each row of `zero_shot.csv` carries `model_key`, the fingerprint of the weights and \
         tokenizer its answers came from: `k`.",
    ] {
        assert!(md.contains(want), "{want}\nmissing from:\n{md}");
    }
    // No probes: none of the probe sections, and no pointer to results.csv.
    assert!(
        md.starts_with("# T\n\nModel: `m`\n\n## Zero-shot answers\n"),
        "{md}"
    );
    for absent in [
        "Linear probes",
        "## Results",
        "Modality gap",
        "results.csv",
        "Few-shot",
    ] {
        assert!(!md.contains(absent), "{absent} in:\n{md}");
    }
    // No figure named: no link.
    let md = markdown_report(
        &[],
        &ReportContext {
            zero_shot: answers(),
            ..Default::default()
        },
    );
    assert!(!md.contains("!["), "{md}");
}

#[test]
fn with_probes_the_section_follows_image_vs_text_and_changes_nothing_else() {
    let probes = vec![
        result_row("d", "vision.a", "fine", 0.6),
        result_row("d", "projector.p", "fine", 0.4),
        result_row("d", "llm.image.layer[-1].last", "fine", 0.3),
        result_row("d", "llm.text.layer[-1].last", "fine", 0.8),
    ];
    let plain = ReportContext {
        title: "T".into(),
        command: "gapprobe run".into(),
        figure: "modality_gap.png".into(),
        ..Default::default()
    };
    let ctx = ReportContext {
        zero_shot: answers(),
        ..plain.clone()
    };
    let (before, md) = (
        markdown_report(&probes, &plain),
        markdown_report(&probes, &ctx),
    );
    assert!(
        !before.contains("Zero-shot") && !before.contains("zero-shot"),
        "{before}"
    );
    let (head, rest) = md
        .split_once("\n## Zero-shot answers\n")
        .expect("the section");
    let (_, tail) = rest.split_once("\n## Provenance\n").expect("provenance");
    assert!(
        head.contains("## Results") && head.ends_with("| +50.0 |\n"),
        "{md}"
    );
    // Only the section and the provenance sentence on the answers' weights are new.
    let note = "Each row of `zero_shot.csv` carries `model_key`, the fingerprint of the weights \
                and tokenizer its answers came from: `k`.\n\n";
    let tail = tail.replacen(note, "", 1);
    assert_eq!(format!("{head}\n## Provenance\n{tail}"), before);
}

#[test]
fn several_models_get_a_column_and_several_prompts_say_where_they_were_asked() {
    let mut rows = Vec::new();
    for (model, shift) in [("org/a", 0.0), ("/local/b", 0.1)] {
        for (level, em) in [("coarse", 0.4), ("superordinate", 0.9)] {
            rows.push(of(model, row("cub", "image", level, em + shift)));
            rows.push(of(
                model,
                ZeroShotRow {
                    prompt: "Attributes: ```a```\nWhat is the name of the bird?".into(),
                    max_new_tokens: 16,
                    model_key: format!("{}-key", &model[model.len() - 1..]),
                    ..row("cub", "text", level, (em + shift + 0.2).min(1.0))
                },
            ));
        }
    }
    let md = markdown_report(
        &[],
        &ReportContext {
            zero_shot: rows,
            ..Default::default()
        },
    );
    for want in [
        "Models: `org/a`, `/local/b`\n",
        "greedily (at most 16–32 new tokens)",
        "| level | model | image EM (95% CI) | text EM (95% CI) | text − image | image F1 | text F1 | n |\n\
         |---|---|---|---|---|---|---|---|\n\
         | superordinate | a | 90.0 (85.0–95.0) | 100.0 (95.0–100.0) | +10.0 | 95.0 | 100.0 | 100 |\n",
        "| superordinate | b | 100.0 (95.0–100.0) | 100.0 (95.0–100.0) | +0.0 |",
        "| coarse | a | 40.0 (35.0–45.0) | 60.0 (55.0–65.0) | +20.0 | 70.0 | 80.0 | 100 |\n\
         | coarse | b | 50.0 (45.0–55.0) | 70.0 (65.0–75.0) | +20.0 | 75.0 | 85.0 | 100 |\n",
        "Prompts:\n\n\
         a · cub · image (superordinate, coarse); b · cub · image (superordinate, coarse):\n\n\
         ```text\nWhat is the name of the {concept} in this image?\n```\n\n\
         a · cub · text (superordinate, coarse); b · cub · text (superordinate, coarse):\n\n\
         ````text\nAttributes: ```a```\nWhat is the name of the bird?\n````\n",
        "its answers came from: `k`, `a-key`, `b-key`.",
    ] {
        assert!(md.contains(want), "{want}\nmissing from:\n{md}");
    }
}
