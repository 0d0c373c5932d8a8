//! Every source layout, fabricated in miniature: counts, labels, hierarchy.

mod datasets_fixtures;

use datasets_fixtures as fx;
use gapprobe_features::datasets::{Dataset, DatasetSpec, LabelLevel, Split};

fn load(spec: &str) -> Dataset {
    let s: DatasetSpec = spec.parse().unwrap();
    s.load().unwrap_or_else(|e| panic!("{spec}: {e:#}"))
}

/// Sorted distinct names of `level` among the samples of `split` (all splits when `None`).
fn names(ds: &Dataset, level: LabelLevel) -> Vec<String> {
    let mut v = ds.classes(level).to_vec();
    v.sort();
    v
}

fn label_of(ds: &Dataset, id: &str, level: LabelLevel) -> Option<String> {
    let s = ds.samples.iter().find(|s| s.id == id).expect(id);
    s.label(level)
        .map(|l| ds.classes(level)[l as usize].clone())
}

#[test]
fn cub_counts_names_and_absent_coarse() {
    let t = tempfile::tempdir().unwrap();
    let root = fx::cub(t.path());
    // the parent folder works too
    let ds = load(&format!("cub:{}", t.path().display()));
    assert_eq!(ds.samples.len(), 12);
    assert_eq!(ds.split(Split::Train).len(), 6);
    assert_eq!(ds.split(Split::Test).len(), 6);
    assert_eq!(
        names(&ds, LabelLevel::Fine),
        ["Black footed Albatross", "Cardinal", "Laysan Albatross"]
    );
    assert_eq!(ds.classes(LabelLevel::Superordinate), ["Bird"]);
    assert!(
        ds.classes(LabelLevel::Coarse).is_empty(),
        "no coarse level without a label map"
    );
    assert_eq!(
        label_of(&ds, "9", LabelLevel::Fine).as_deref(),
        Some("Cardinal")
    );
    assert!(ds.image_path(&ds.samples[0]).is_file());

    // label maps: CSV (with header and quotes) and JSON
    let csv = t.path().join("map.csv");
    fx::write(&csv, "fine,coarse\nBlack_footed_Albatross,Albatross\n\"laysan albatross\",Albatross\nCardinal,\"Cardinals, grosbeaks\"\n");
    let ds = load(&format!(
        "cub:{}?labelmap={}",
        root.display(),
        csv.display()
    ));
    assert_eq!(
        names(&ds, LabelLevel::Coarse),
        ["Albatross", "Cardinals, grosbeaks"]
    );
    assert_eq!(
        label_of(&ds, "1", LabelLevel::Coarse).as_deref(),
        Some("Albatross")
    );
    let json = t.path().join("map.json");
    fx::write(
        &json,
        r#"{"Black footed Albatross": "Seabird", "Laysan Albatross": "Seabird", "Cardinal": "Songbird"}"#,
    );
    let ds = load(&format!(
        "cub:{}?labelmap={}",
        root.display(),
        json.display()
    ));
    assert_eq!(
        label_of(&ds, "12", LabelLevel::Coarse).as_deref(),
        Some("Songbird")
    );
    // an incomplete map is an error naming the missing classes
    fx::write(&json, r#"{"Cardinal": "Songbird"}"#);
    let e = format!(
        "{:#}",
        format!("cub:{}?labelmap={}", root.display(), json.display())
            .parse::<DatasetSpec>()
            .unwrap()
            .load()
            .unwrap_err()
    );
    assert!(
        e.contains("lacks 2 of the 3 fine classes") && e.contains("Albatross"),
        "{e}"
    );
}

#[test]
fn nabirds_hierarchy_and_variant_suffixes() {
    let t = tempfile::tempdir().unwrap();
    let root = fx::nabirds(t.path());
    let ds = load(&format!("nabirds:{}", root.display()));
    assert_eq!(ds.samples.len(), 8);
    assert_eq!(ds.split(Split::Train).len(), 4);
    // "(Male)" / "(Female/juvenile)" leaves merge into one fine class
    assert_eq!(
        names(&ds, LabelLevel::Fine),
        ["Mallard", "Red-tailed Hawk", "Wood Duck"]
    );
    assert_eq!(
        names(&ds, LabelLevel::Coarse),
        ["Ducks, Geese, and Swans", "Hawks"]
    );
    let by_fine = |f: &str| {
        let s = ds
            .samples
            .iter()
            .find(|s| ds.classes(LabelLevel::Fine)[s.labels[2].unwrap() as usize] == f)
            .unwrap();
        ds.classes(LabelLevel::Coarse)[s.labels[1].unwrap() as usize].clone()
    };
    assert_eq!(
        by_fine("Mallard"),
        "Ducks, Geese, and Swans",
        "variant → grandparent"
    );
    assert_eq!(
        by_fine("Wood Duck"),
        "Ducks, Geese, and Swans",
        "leaf → parent"
    );
    assert_eq!(by_fine("Red-tailed Hawk"), "Hawks");
    assert_eq!(ds.classes(LabelLevel::Superordinate), ["Bird"]);
}

#[test]
fn stanford_dogs_from_mat_lists() {
    let t = tempfile::tempdir().unwrap();
    let root = fx::dogs(t.path());
    let ds = load(&format!("dogs:{}", root.display()));
    assert_eq!(
        (ds.split(Split::Train).len(), ds.split(Split::Test).len()),
        (4, 2)
    );
    assert_eq!(
        names(&ds, LabelLevel::Fine),
        ["Chihuahua", "Japanese spaniel"]
    );
    assert_eq!(ds.classes(LabelLevel::Superordinate), ["Dog"]);
    assert!(ds.classes(LabelLevel::Coarse).is_empty());
    // uncompressed MAT files read the same
    let list = vec![("n02085620-Chihuahua/n02085620_0.jpg".to_string(), 1)];
    fx::dogs_list(&root.join("lists/train_list.mat"), &list, false);
    let ds = load(&format!("dogs:{}", root.display()));
    assert_eq!(ds.split(Split::Train).len(), 1);
}

#[test]
fn stanford_cars_devkit_and_csv_agree() {
    let t = tempfile::tempdir().unwrap();
    for root in [fx::cars_devkit(t.path()), fx::cars_csv(t.path())] {
        let ds = load(&format!("cars:{}", root.display()));
        assert_eq!(
            (ds.split(Split::Train).len(), ds.split(Split::Test).len()),
            (6, 3),
            "{}",
            root.display()
        );
        assert_eq!(names(&ds, LabelLevel::Fine), {
            let mut v: Vec<String> = fx::CAR_NAMES.iter().map(|s| s.to_string()).collect();
            v.sort();
            v
        });
        assert_eq!(names(&ds, LabelLevel::Coarse), ["SUV", "other", "pickup"]);
        assert_eq!(
            label_of(&ds, "test/00002.jpg", LabelLevel::Coarse).as_deref(),
            Some("pickup")
        );
        assert_eq!(ds.classes(LabelLevel::Superordinate), ["Car"]);
        assert!(ds.samples.iter().all(|s| ds.image_path(s).is_file()));
    }
}

#[test]
fn car_body_types() {
    use gapprobe_features::datasets::cars_body_type as b;
    assert_eq!(
        b("Rolls-Royce Phantom Drophead Coupe Convertible 2012"),
        "convertible"
    );
    assert_eq!(b("Ram C/V Cargo Van Minivan 2012"), "minivan");
    assert_eq!(b("Chevrolet Express Cargo Van 2007"), "van");
    assert_eq!(b("Chevrolet Silverado 1500 Extended Cab 2012"), "pickup");
    assert_eq!(b("Hyundai Veloster Hatchback 2012"), "hatchback");
    assert_eq!(b("Audi S6 Sedan 2011"), "sedan");
    assert_eq!(b("Ford GT Coupe 2006"), "coupe");
    assert_eq!(b("Dodge Caliber Wagon 2012"), "wagon");
    assert_eq!(b("Chevrolet Corvette ZR1 2012"), "other");
}

#[test]
fn aircraft_levels_crop_and_val() {
    let t = tempfile::tempdir().unwrap();
    let root = fx::aircraft(t.path());
    let ds = load(&format!("aircraft:{}", root.display()));
    assert_eq!(ds.crop_bottom_px, 20);
    assert_eq!(
        (
            ds.split(Split::Train).len(),
            ds.split(Split::Val).len(),
            ds.split(Split::Test).len()
        ),
        (6, 0, 3)
    );
    assert_eq!(names(&ds, LabelLevel::Coarse), ["Airbus", "Boeing"]);
    assert_eq!(
        names(&ds, LabelLevel::Fine),
        ["707-320", "727-200", "A300B4"]
    );
    assert_eq!(ds.classes(LabelLevel::Superordinate), ["Airplane"]);
    let ds = load(&format!(
        "aircraft:{}?coarse=family&val=official",
        root.join("data").display()
    ));
    assert_eq!(ds.split(Split::Val).len(), 3);
    assert_eq!(
        names(&ds, LabelLevel::Coarse),
        ["A300", "Boeing 707", "Boeing 727"]
    );
    assert!(format!("aircraft:{}?coarse=wing", root.display())
        .parse::<DatasetSpec>()
        .unwrap()
        .load()
        .is_err());
}

#[test]
fn inat_ranks() {
    let t = tempfile::tempdir().unwrap();
    let root = fx::inat(t.path());
    let ds = load(&format!(
        "inat2021:{}?annotations=train_mini.json",
        root.display()
    ));
    assert_eq!(
        (ds.split(Split::Train).len(), ds.split(Split::Test).len()),
        (6, 3)
    );
    assert_eq!(names(&ds, LabelLevel::Superordinate), ["Birds", "Plants"]);
    assert_eq!(names(&ds, LabelLevel::Coarse), ["Anatidae", "Fagaceae"]);
    assert_eq!(
        names(&ds, LabelLevel::Fine),
        ["Aix sponsa", "Anas platyrhynchos", "Quercus alba"]
    );
    // train.json is absent, so train_mini.json is the default; any rank as coarse
    let ds = load(&format!(
        "inat2021:{}?coarse=genus&fine=common_name",
        root.display()
    ));
    assert_eq!(names(&ds, LabelLevel::Coarse), ["Aix", "Anas", "Quercus"]);
    assert_eq!(
        names(&ds, LabelLevel::Fine),
        ["Mallard", "White Oak", "Wood Duck"]
    );
}

#[test]
fn imagefolder_with_carved_test_split() {
    let t = tempfile::tempdir().unwrap();
    let root = fx::imagefolder(t.path());
    let ds = load(&format!(
        "imagefolder:{}?superordinate=Animal",
        root.display()
    ));
    assert_eq!(ds.samples.len(), 10, "the .txt file is ignored");
    assert_eq!(ds.classes(LabelLevel::Fine), ["cat", "dog"]);
    assert_eq!(ds.classes(LabelLevel::Superordinate), ["Animal"]);
    let ds = load(&format!(
        "imagefolder:{}?test_fraction=0.4&seed=3",
        root.display()
    ));
    assert_eq!(
        (ds.split(Split::Train).len(), ds.split(Split::Test).len()),
        (6, 4)
    );
    // split folders
    for (s, n) in [("train", 3), ("test", 2)] {
        for k in 0..n {
            fx::jpg(
                &t.path()
                    .join("split")
                    .join(s)
                    .join("owl")
                    .join(format!("{k}.png")),
                4,
                4,
                k,
            );
        }
    }
    let ds = load(&format!("imagefolder:{}", t.path().join("split").display()));
    assert_eq!(
        (ds.split(Split::Train).len(), ds.split(Split::Test).len()),
        (3, 2)
    );
}

#[test]
fn parquet_manifest_with_attributes() {
    use polars::prelude::*;
    let t = tempfile::tempdir().unwrap();
    for k in 0..4 {
        fx::jpg(&t.path().join(format!("img/{k}.jpg")), 4, 4, k);
    }
    let mut df = df!(
        "path" => ["img/0.jpg", "img/1.jpg", "img/2.jpg", "img/3.jpg"],
        "split" => ["train", "train", "test", "test"],
        "fine" => [1i64, 2, 1, 2],
        "attributes" => [Some("red wings"), None, Some("long tail"), Some("")]
    )
    .unwrap();
    let p = t.path().join("m.parquet");
    ParquetWriter::new(std::fs::File::create(&p).unwrap())
        .finish(&mut df)
        .unwrap();
    let ds = load(&format!("manifest:{}", p.display()));
    assert_eq!(ds.samples.len(), 4);
    assert_eq!(ds.classes(LabelLevel::Fine), ["1", "2"]);
    assert_eq!(
        ds.attributes.get("img/0.jpg").map(String::as_str),
        Some("red wings")
    );
    assert_eq!(ds.attributes.len(), 2);
    // CSV round trip keeps ids, labels and attributes
    let csv = t.path().join("m.csv");
    gapprobe_features::datasets::write_manifest(&ds, &csv).unwrap();
    let back = load(&format!("manifest:{}", csv.display()));
    assert_eq!(back.manifest_hash(), ds.manifest_hash());
    assert_eq!(back.attributes, ds.attributes);
    let s = gapprobe_features::datasets::inspect::summary(&ds, 4);
    assert!(
        s.contains("attribute texts: 2 of 4 images (llm.text.* feature points need one per image)")
            && s.contains("e.g. img/0.jpg: \"red wings\""),
        "{s}"
    );
}

#[test]
fn inspect_summary() {
    let t = tempfile::tempdir().unwrap();
    let root = fx::aircraft(t.path());
    let ds = load(&format!("aircraft:{}?val=official", root.display()));
    let s = gapprobe_features::datasets::inspect::summary(&ds, 50);
    assert!(s.contains("9 images"), "{s}");
    assert!(s.contains("crop: bottom 20 px"), "{s}");
    assert!(s.contains("width  16 / 16 / 16"), "{s}");
    assert!(s.contains("height 32 / 32 / 32"), "{s}");
    assert!(s.contains("attribute texts: none"), "{s}");
}

/// CUB attribute names: three groups, ids written out of order, `wing color` not contiguous.
const CUB_ATTRIBUTE_NAMES: &str = "1 has_bill_shape::curved_(up_or_down)\n2 has_bill_shape::dagger\n3 has_wing_color::blue\n4 has_wing_color::brown\n5 has_wing_color::white\n6 has_size::small_(5_-_9_in)\n8 has_wing_color::black\n7 has_size::large_(16_-_32_in)\n";

/// Image 1: every certainty; image 2: lines out of id order, one with the 6-field quirk;
/// image 3: nothing present.
const CUB_ATTRIBUTE_LABELS: &str = "1 1 0 3 1.0\n1 2 1 4 2.5\n1 3 1 3 0\n1 4 1 2 0\n1 5 1 4 0\n1 6 1 3 0\n1 7 0 4 0\n1 8 1 1 0\n\n2 6 1 4 0 2.045\n2 1 1 3 12.5\n3 2 0 4 0\n3 3 0 1 0\n";

fn cub_attribute_error(spec: &str) -> String {
    format!(
        "{:#}",
        spec.parse::<DatasetSpec>().unwrap().load().unwrap_err()
    )
}

#[test]
fn cub_attributes_grouped_ordered_and_filtered() {
    let t = tempfile::tempdir().unwrap();
    let root = fx::cub(t.path());
    fx::write(
        &root.join("attributes/image_attribute_labels.txt"),
        CUB_ATTRIBUTE_LABELS,
    );
    fx::write(&root.join("attributes/attributes.txt"), CUB_ATTRIBUTE_NAMES);
    fx::write(
        &root.join("attributes/certainties.txt"),
        "1 not visible\n2 guessing\n3 probably\n4 definitely\n",
    );
    let attrs =
        |spec: &str| -> Vec<(String, String)> { load(spec).attributes.into_iter().collect() };
    let pair = |id: &str, text: &str| (id.to_string(), text.to_string());
    let r = root.display();
    // default: present and certainty ≥ 3; image 3 (nothing kept) has no entry
    assert_eq!(
        attrs(&format!("cub:{r}")),
        [
            pair(
                "1",
                "bill shape: dagger; wing color: blue, white; size: small (5 - 9 in)"
            ),
            pair(
                "2",
                "bill shape: curved (up or down); size: small (5 - 9 in)"
            ),
        ]
    );
    let one = |c: u8| {
        load(&format!("cub:{r}?attr_certainty={c}"))
            .attributes
            .get("1")
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(one(4), "bill shape: dagger; wing color: white");
    assert_eq!(
        one(2),
        "bill shape: dagger; wing color: blue, brown, white; size: small (5 - 9 in)"
    );
    // a value of a group listed later still joins its group, in attribute-id order
    assert_eq!(
        one(1),
        "bill shape: dagger; wing color: blue, brown, white, black; size: small (5 - 9 in)"
    );
    let ds = load(&format!("cub:{r}?attr_certainty=4"));
    assert_eq!(ds.attributes.len(), 2);
    assert_eq!(ds.attributes["2"], "size: small (5 - 9 in)");
    for bad in ["0", "5", "x"] {
        let e = cub_attribute_error(&format!("cub:{r}?attr_certainty={bad}"));
        assert!(e.contains("attr_certainty"), "{e}");
    }
    let e = cub_attribute_error(&format!("nabirds:{r}?attr_certainty=3"));
    assert!(e.contains("unknown option 'attr_certainty'"), "{e}");
}

#[test]
fn cub_attribute_names_in_parent_folder_or_absent() {
    let t = tempfile::tempdir().unwrap();
    let root = fx::cub(t.path());
    // no attribute files: no attributes, no error
    assert!(load(&format!("cub:{}", root.display()))
        .attributes
        .is_empty());
    fx::write(
        &root.join("attributes/image_attribute_labels.txt"),
        CUB_ATTRIBUTE_LABELS,
    );
    // labels without attributes.txt anywhere: still none
    assert!(load(&format!("cub:{}", root.display()))
        .attributes
        .is_empty());
    // attributes.txt next to CUB_200_2011/, as in the official tarball; spec naming either folder
    fx::write(&t.path().join("attributes.txt"), CUB_ATTRIBUTE_NAMES);
    for spec in [
        format!("cub:{}", root.display()),
        format!("cub:{}", t.path().display()),
    ] {
        let ds = load(&spec);
        assert_eq!(ds.attributes.len(), 2, "{spec}");
        assert_eq!(
            ds.attributes["1"],
            "bill shape: dagger; wing color: blue, white; size: small (5 - 9 in)"
        );
    }
    // the dataset folder's own copy comes first
    fx::write(&root.join("attributes.txt"), "1 has_bill_shape::curved\n2 has_bill_shape::dagger\n3 has_tail::long\n4 has_tail::short\n5 has_eye::red\n6 has_eye::black\n7 has_eye::blue\n8 has_eye::white\n");
    let ds = load(&format!("cub:{}", root.display()));
    assert_eq!(
        ds.attributes["1"],
        "bill shape: dagger; tail: long; eye: red, black"
    );
    // NABirds ignores attribute files
    let nb = fx::nabirds(t.path());
    fx::write(
        &nb.join("attributes/image_attribute_labels.txt"),
        CUB_ATTRIBUTE_LABELS,
    );
    fx::write(&nb.join("attributes/attributes.txt"), CUB_ATTRIBUTE_NAMES);
    assert!(load(&format!("nabirds:{}", nb.display()))
        .attributes
        .is_empty());
}

#[test]
fn cub_attribute_errors_name_file_and_line() {
    let t = tempfile::tempdir().unwrap();
    let root = fx::cub(t.path());
    let labels = root.join("attributes/image_attribute_labels.txt");
    fx::write(&root.join("attributes/attributes.txt"), CUB_ATTRIBUTE_NAMES);
    let spec = format!("cub:{}", root.display());
    let at = |line: usize| format!("image_attribute_labels.txt:{line}:");
    for (bad_line, what) in [
        ("1 x 1 3 0", "malformed line"),
        ("1 3 1 3", "malformed line"),
        ("1 3 1 3 0 0 0", "malformed line"),
        ("1 3 2 3 0", "is_present must be 0 or 1"),
        ("1 3 1 5 0", "certainty id must be 1 to 4"),
        ("1 99 1 3 0", "attribute id '99' is not in"),
        ("77 3 1 3 0", "image id '77' is not in"),
        ("1 1 1 3 0", "duplicate line for image '1' attribute '1'"),
    ] {
        fx::write(&labels, &format!("1 1 0 3 0\n2 2 1 4 0\n{bad_line}\n"));
        let e = cub_attribute_error(&spec);
        assert!(e.contains(&at(3)) && e.contains(what), "{bad_line}: {e}");
    }
    // attributes.txt is metadata: a bad line there always fails, naming it
    fx::write(&labels, "1 1 1 3 0\n");
    fx::write(
        &root.join("attributes/attributes.txt"),
        "1 has_bill_shape::dagger\n2 has_wing_color\n",
    );
    let e = cub_attribute_error(&spec);
    assert!(e.contains("attributes.txt:2:"), "{e}");
    let e = cub_attribute_error(&format!("{spec}?skip_bad=1"));
    assert!(e.contains("attributes.txt:2:"), "{e}");
    // with skip_bad a bad labels line is recorded and the rest is kept
    fx::write(&root.join("attributes/attributes.txt"), CUB_ATTRIBUTE_NAMES);
    fx::write(&labels, "1 2 1 4 0\n1 x 1 3 0\n77 3 1 3 0\n77 4 1 3 0\n");
    let ds = load(&format!("{spec}?skip_bad=1"));
    assert_eq!(ds.samples.len(), 12);
    assert_eq!(ds.attributes["1"], "bill shape: dagger");
    let reasons: Vec<&str> = ds.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(
        reasons.len(),
        2,
        "an unknown image is reported once: {reasons:?}"
    );
    assert!(
        reasons[0].contains(&at(2)) && reasons[1].contains(&at(3)),
        "{reasons:?}"
    );
}
