//! Bad input (errors naming file and line, or skipped with skip_bad), splits and few-shot.

mod datasets_fixtures;

use datasets_fixtures as fx;
use gapprobe_features::datasets::{Dataset, DatasetSpec, LabelLevel, Split};
use std::path::Path;

fn try_load(spec: &str) -> anyhow::Result<Dataset> {
    spec.parse::<DatasetSpec>()?.load()
}

fn err(spec: &str) -> String {
    format!("{:#}", try_load(spec).expect_err(spec))
}

/// Replaces line `no` (1-based) of `path`.
fn set_line(path: &Path, no: usize, text: &str) {
    let s = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = s.lines().map(String::from).collect();
    lines[no - 1] = text.to_string();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn cub_bad_inputs_name_file_and_line() {
    let t = tempfile::tempdir().unwrap();
    let root = fx::cub(t.path());
    let spec = format!("cub:{}", root.display());
    let images = root.join("images.txt");
    let labels = root.join("image_class_labels.txt");

    // missing image
    std::fs::remove_file(root.join("images/017.Cardinal/017.Cardinal_1.jpg")).unwrap();
    let e = err(&spec);
    assert!(
        e.contains(&format!("{}:10:", images.display())) && e.contains("missing image"),
        "{e}"
    );
    let ds = try_load(&format!("{spec}?skip_bad=1")).unwrap();
    assert_eq!(ds.samples.len(), 11);
    assert_eq!(ds.skipped.len(), 1);
    assert_eq!(ds.skipped[0].id, "10");
    assert!(
        ds.skipped[0].reason.contains("images.txt:10"),
        "{:?}",
        ds.skipped
    );
    fx::jpg(
        &root.join("images/017.Cardinal/017.Cardinal_1.jpg"),
        8,
        6,
        0,
    );

    // duplicate id
    set_line(
        &images,
        5,
        "4 002.Laysan_Albatross/002.Laysan_Albatross_0.jpg",
    );
    let e = err(&spec);
    assert!(
        e.contains(&format!("{}:5:", images.display())) && e.contains("duplicate image id '4'"),
        "{e}"
    );
    set_line(
        &images,
        5,
        "5 002.Laysan_Albatross/002.Laysan_Albatross_0.jpg",
    );

    // unknown class id
    set_line(&labels, 7, "7 999");
    let e = err(&spec);
    assert!(
        e.contains(&format!("{}:7:", labels.display())) && e.contains("class id '999' is unknown"),
        "{e}"
    );
    set_line(&labels, 7, "7 2");

    // malformed line
    set_line(&images, 3, "garbage");
    let e = err(&spec);
    assert!(
        e.contains(&format!("{}:3:", images.display())) && e.contains("malformed"),
        "{e}"
    );
    let ds = try_load(&format!("{spec}?skip_bad=1")).unwrap();
    assert_eq!(ds.samples.len(), 11);
    // ...and the orphan label of image 3 is reported too
    assert_eq!(ds.skipped.len(), 2, "{:?}", ds.skipped);
}

#[test]
fn other_sources_report_bad_items() {
    let t = tempfile::tempdir().unwrap();
    // Aircraft: variant with no manufacturer line
    let root = fx::aircraft(t.path());
    let man = root.join("data/images_manufacturer_test.txt");
    set_line(&man, 2, "");
    let e = err(&format!("aircraft:{}", root.display()));
    assert!(
        e.contains("images_variant_test.txt:2:") && e.contains("no line in"),
        "{e}"
    );
    // Cars CSV: unknown class and malformed line
    let root = fx::cars_csv(t.path());
    let train = root.join("anno_train.csv");
    set_line(&train, 2, "00002.jpg,1,1,5,5,197");
    let e = err(&format!("cars:{}", root.display()));
    assert!(
        e.contains(&format!("{}:2:", train.display())) && e.contains("unknown class id 197"),
        "{e}"
    );
    set_line(&train, 2, "00002.jpg;1");
    let e = err(&format!("cars:{}", root.display()));
    assert!(
        e.contains(&format!("{}:2:", train.display())) && e.contains("malformed"),
        "{e}"
    );
    // Dogs: missing image names the list file and entry
    let root = fx::dogs(t.path());
    std::fs::remove_file(root.join("Images/n02085620-Chihuahua/n02085620_2.jpg")).unwrap();
    let e = err(&format!("dogs:{}", root.display()));
    assert!(
        e.contains("test_list.mat") && e.contains("missing image"),
        "{e}"
    );
    // iNat: unknown category
    let root = fx::inat(t.path());
    let p = root.join("val.json");
    let s = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"category_id\": 7", "\"category_id\": 8");
    std::fs::write(&p, s).unwrap();
    let e = err(&format!("inat2021:{}", root.display()));
    assert!(
        e.contains("val.json") && e.contains("annotations[2]: unknown category id 8"),
        "{e}"
    );
    // CSV manifest: duplicate id and missing file
    fx::jpg(&t.path().join("m/a.jpg"), 4, 4, 0);
    fx::write(
        &t.path().join("m/m.csv"),
        "path,split,fine\na.jpg,train,x\na.jpg,test,x\nb.jpg,test,y\n",
    );
    let e = err(&format!("manifest:{}", t.path().join("m/m.csv").display()));
    assert!(e.contains("m.csv:3:") && e.contains("duplicate id"), "{e}");
    let ds = try_load(&format!(
        "manifest:{}?skip_bad=1",
        t.path().join("m/m.csv").display()
    ))
    .unwrap();
    assert_eq!(ds.skipped.len(), 2);
    assert!(
        ds.skipped[1].reason.contains("m.csv:4:") && ds.skipped[1].reason.contains("missing image")
    );
    // unknown option
    assert!(err(&format!("cub:{}?val_fractoin=0.1", root.display()))
        .contains("unknown option 'val_fractoin'"));
}

#[test]
fn corrupt_images_are_found_by_check_images() {
    let t = tempfile::tempdir().unwrap();
    let root = fx::imagefolder(t.path());
    std::fs::write(root.join("dog/3.jpg"), b"not a jpeg").unwrap();
    let mut ds = try_load(&format!("imagefolder:{}", root.display())).unwrap();
    let e = format!("{:#}", ds.clone().check_images(false).unwrap_err());
    assert!(e.contains("dog/3.jpg"), "{e}");
    let dims = ds.check_images(true).unwrap();
    assert_eq!((dims.len(), ds.samples.len(), ds.skipped.len()), (9, 9, 1));
    assert_eq!(dims[0], (5, 5));
    // the same through the spec
    let spec = format!("imagefolder:{}?check_images=1", root.display());
    assert!(err(&spec).contains("dog/3.jpg"));
    let ds = try_load(&format!("{spec}&skip_bad=1")).unwrap();
    assert_eq!((ds.samples.len(), ds.skipped.len()), (9, 1));
}

#[test]
fn val_split_is_seeded_and_stratified_and_few_shot_keeps_k() {
    let t = tempfile::tempdir().unwrap();
    let root = fx::imagefolder(t.path());
    for k in 5..20 {
        fx::jpg(&root.join("cat").join(format!("{k}.jpg")), 3, 3, k);
    }
    let spec = format!(
        "imagefolder:{}?test_fraction=0.2&val_fraction=0.25&seed=1",
        root.display()
    );
    let a = try_load(&spec).unwrap();
    let b = try_load(&spec).unwrap();
    assert_eq!(a.manifest_hash(), b.manifest_hash(), "deterministic");
    let c = try_load(&spec.replace("seed=1", "seed=2")).unwrap();
    assert_ne!(a.manifest_hash(), c.manifest_hash(), "seed matters");
    let count = |ds: &Dataset, split, class: u32| {
        ds.split(split)
            .iter()
            .filter(|s| s.label(LabelLevel::Fine) == Some(class))
            .count()
    };
    // cat: 20 → 4 test, 16 train → 4 val; dog: 5 → 1 test, 4 train → 1 val
    assert_eq!(
        (
            count(&a, Split::Test, 0),
            count(&a, Split::Val, 0),
            count(&a, Split::Train, 0)
        ),
        (4, 4, 12)
    );
    assert_eq!(
        (
            count(&a, Split::Test, 1),
            count(&a, Split::Val, 1),
            count(&a, Split::Train, 1)
        ),
        (1, 1, 3)
    );
    let f = try_load(&format!("{spec}&few_shot=2")).unwrap();
    assert_eq!(
        (count(&f, Split::Train, 0), count(&f, Split::Train, 1)),
        (2, 2)
    );
    assert_eq!(
        f.split(Split::Val).len(),
        a.split(Split::Val).len(),
        "val untouched"
    );
    assert_eq!(
        f.split(Split::Test).len(),
        a.split(Split::Test).len(),
        "test untouched"
    );
}

#[test]
fn mat_roundtrip() {
    use gapprobe_features::datasets::mat::{read_mat, write_mat, MatValue};
    let t = tempfile::tempdir().unwrap();
    let chars = MatValue::Char {
        dims: vec![2, 3],
        data: "aabbc ".chars().collect(),
    }; // rows "abc", "ab"
    for compress in [false, true] {
        let p = t.path().join(format!("x{compress}.mat"));
        write_mat(
            &p,
            &[
                ("s", MatValue::str("hello")),
                ("m", chars.clone()),
                ("n", MatValue::column(&[1.0, 2.5])),
            ],
            compress,
        )
        .unwrap();
        let v = read_mat(&p).unwrap();
        assert_eq!(v["s"].strings().unwrap(), ["hello"]);
        assert_eq!(v["m"].strings().unwrap(), ["abc", "ab"]);
        assert_eq!(v["n"].numbers().unwrap(), [1.0, 2.5]);
    }
    std::fs::write(t.path().join("bad.mat"), b"short").unwrap();
    assert!(format!("{:#}", read_mat(&t.path().join("bad.mat")).unwrap_err()).contains("bad.mat"));
}

#[test]
fn nabirds_image_on_internal_node_is_reported() {
    let t = tempfile::tempdir().unwrap();
    let root = fx::nabirds(t.path());
    let labels = root.join("image_class_labels.txt");
    let first = std::fs::read_to_string(&labels).unwrap();
    let uuid = first.split_whitespace().next().unwrap().to_string();
    set_line(&labels, 1, &format!("{uuid} 10"));
    let e = err(&format!("nabirds:{}", root.display()));
    assert!(
        e.contains(&format!("{}:1:", labels.display())) && e.contains("is not a leaf class"),
        "{e}"
    );
}
