use super::*;
use crate::test_rows::zero_shot_row as row;

/// The figure of `rows` in a temporary directory: whether it drew, the PNG's size and the SVG.
fn render(rows: &[ZeroShotRow], title: &str) -> (bool, Option<(u32, u32)>, String) {
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("z.png"), dir.path().join("z.svg"));
    let drew = zero_shot_figure(rows, &png, &svg, title).unwrap();
    let size = std::fs::read(&png).ok().map(|bytes| {
        let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
        (be(16), be(20))
    });
    (
        drew,
        size,
        std::fs::read_to_string(&svg).unwrap_or_default(),
    )
}

/// The x of the SVG text whose content is `label` (plotters writes it on the line after the
/// `<text x=…>` tag).
fn text_x(svg: &str, label: &str) -> Option<f64> {
    let lines: Vec<&str> = svg.lines().map(str::trim).collect();
    let i = lines.iter().position(|l| *l == label)?;
    let tag = lines[i.checked_sub(1)?];
    let x = tag.split("x=\"").nth(1)?.split('"').next()?;
    x.parse().ok()
}

/// How many width-2 polylines (the lines and their legend keys) the SVG draws in `colour`.
fn strokes(svg: &str, colour: &str) -> usize {
    svg.lines()
        .filter(|l| {
            l.contains("<polyline")
                && l.contains(&format!("stroke=\"{colour}\""))
                && l.contains("stroke-width=\"2\"")
        })
        .count()
}

/// Both arms of `ds` at every level: the cliff, the text arm above the image arm.
fn cliff(ds: &str) -> Vec<ZeroShotRow> {
    let mut rows = Vec::new();
    for (level, image, text) in [
        ("fine", 0.02, 0.2),
        ("superordinate", 0.98, 0.99),
        ("coarse", 0.41, 0.6),
    ] {
        rows.push(row(ds, "image", level, image));
        rows.push(row(ds, "text", level, text));
    }
    rows
}

#[test]
fn nothing_without_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("z.png"), dir.path().join("z.svg"));
    assert!(!zero_shot_figure(&[], &png, &svg, "t").unwrap());
    assert!(!png.exists() && !svg.exists());
}

#[test]
fn a_line_per_dataset_and_arm_over_the_levels_in_order() {
    let rows = [cliff("cub"), cliff("dogs")].concat();
    let (drew, size, svg) = render(&rows, "Zero-shot exact match");
    assert!(drew);
    // Four lines and the error bars' entry: three legend lines in two columns.
    assert_eq!(size, Some((1000, 500 + 14 + 3 * 22)));
    let lines: Vec<&str> = svg.lines().map(str::trim).collect();
    for want in [
        "Zero-shot exact match",
        "cub · image",
        "cub · text",
        "dogs · image",
        "dogs · text",
        "bars: 95% bootstrap interval",
        "exact match (%)",
        "label level",
        "100",
    ] {
        assert!(lines.contains(&want), "{want} missing from the SVG");
    }
    // Levels left to right superordinate, coarse, fine, whatever order the rows give them.
    let x = |l: &str| text_x(&svg, l).unwrap_or_else(|| panic!("no tick {l}"));
    assert!(x("superordinate") < x("coarse") && x("coarse") < x("fine"));
    // A colour per dataset (the crate's palette), both arms in it.
    let models = zero_shot_models(&rows);
    let drawn: Vec<(&str, &str, RGBColor, bool)> = lines_of(&rows, &models);
    assert_eq!(
        drawn,
        [
            ("cub", "image", LEVEL_COLOURS[0], false),
            ("cub", "text", LEVEL_COLOURS[0], true),
            ("dogs", "image", LEVEL_COLOURS[1], false),
            ("dogs", "text", LEVEL_COLOURS[1], true),
        ]
    );
    assert!(svg.contains("#1F77B4") && svg.contains("#FF7F0E"));
    // One model: circles, no other marker.
    assert!(svg.contains("<circle") && !svg.contains("<polygon"));
}

/// `(dataset, arm, colour, dashed)` of each line, in drawing order.
fn lines_of<'a>(
    rows: &'a [ZeroShotRow],
    models: &Models,
) -> Vec<(&'a str, &'a str, RGBColor, bool)> {
    lines(rows, models)
        .iter()
        .map(|l| (l.dataset, l.arm, l.colour, l.dashed()))
        .collect()
}

#[test]
fn the_image_arm_is_solid_and_the_text_arm_dashed() {
    let rows = cliff("cub");
    let image: Vec<ZeroShotRow> = rows.iter().filter(|r| r.arm == "image").cloned().collect();
    let text: Vec<ZeroShotRow> = rows.iter().filter(|r| r.arm == "text").cloned().collect();
    let (_, _, solid) = render(&image, "t");
    let (_, _, dashed) = render(&text, "t");
    // One polyline through the points and one legend key, against many dashes.
    assert_eq!(strokes(&solid, "#1F77B4"), 2);
    assert!(strokes(&dashed, "#1F77B4") > 6, "{dashed}");
    // A filled circle at each of the three levels and on the legend key.
    assert_eq!(
        solid.matches("fill=\"#1F77B4\" stroke=\"none\"").count(),
        3 + 1
    );
}

#[test]
fn one_level_alone_gets_one_tick() {
    let rows = [
        row("cub", "image", "fine", 0.03),
        row("cub", "text", "fine", 0.2),
    ];
    let (drew, _, svg) = render(&rows, "t");
    assert!(drew);
    assert!(text_x(&svg, "fine").is_some());
    assert!(text_x(&svg, "coarse").is_none() && text_x(&svg, "superordinate").is_none());
}

#[test]
fn several_models_get_their_short_names_and_a_marker_each() {
    let of = |model: &str, rows: Vec<ZeroShotRow>| -> Vec<ZeroShotRow> {
        rows.into_iter()
            .map(|r| ZeroShotRow {
                model: model.into(),
                ..r
            })
            .collect()
    };
    let rows = [
        of("org/a", cliff("cub")),
        of("/local/b", cliff("cub")),
        of("org/c", vec![row("cub", "image", "fine", 0.1)]),
    ]
    .concat();
    let models = zero_shot_models(&rows);
    let markers: Vec<(&str, Marker)> = lines(&rows, &models)
        .iter()
        .map(|l| (l.model, l.marker))
        .collect();
    assert_eq!(
        markers,
        [
            ("org/a", Marker::Circle),
            ("org/a", Marker::Circle),
            ("/local/b", Marker::Triangle),
            ("/local/b", Marker::Triangle),
            ("org/c", Marker::Square),
        ]
    );
    let (drew, size, svg) = render(&rows, "t");
    assert!(drew);
    // Five lines and the error bars' entry.
    assert_eq!(size, Some((1000, 500 + 14 + 3 * 22)));
    let lines: Vec<&str> = svg.lines().map(str::trim).collect();
    for want in [
        "a · cub · image",
        "a · cub · text",
        "b · cub · image",
        "b · cub · text",
        "c · cub · image",
    ] {
        assert!(lines.contains(&want), "{want} missing from the legend");
    }
    assert!(svg.contains("<polygon"), "no triangles");
}
