//! The MAT v5 reader against files written by scipy.io.savemat (tools/make_dataset_fixtures.py).

use gapprobe_features::datasets::mat::read_mat;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/mat")
        .join(name)
}

#[test]
fn reads_scipy_cell_arrays_raw_and_compressed() {
    for f in ["dogs_list_raw.mat", "dogs_list_z.mat"] {
        let v = read_mat(&fixture(f)).unwrap();
        assert_eq!(
            v["file_list"].strings().unwrap(),
            [
                "n02085620-Chihuahua/n02085620_10074.jpg",
                "n02085782-Japanese_spaniel/n02085782_82.jpg"
            ],
            "{f}"
        );
        assert_eq!(v["labels"].numbers().unwrap(), [1.0, 2.0]);
        assert_eq!(v["annotation_list"].strings().unwrap().len(), 2);
    }
}

#[test]
fn reads_scipy_struct_arrays_with_small_integer_types() {
    let v = read_mat(&fixture("cars_annos.mat")).unwrap();
    let a = &v["annotations"];
    let classes: Vec<f64> = a
        .field("class")
        .unwrap()
        .iter()
        .map(|c| c.numbers().unwrap()[0])
        .collect();
    assert_eq!(classes, [14.0, 3.0, 196.0]);
    let x1: Vec<f64> = a
        .field("bbox_x1")
        .unwrap()
        .iter()
        .map(|c| c.numbers().unwrap()[0])
        .collect();
    assert_eq!(x1, [39.0, 40.0, 41.0]);
    let names: Vec<String> = a
        .field("fname")
        .unwrap()
        .iter()
        .map(|c| c.strings().unwrap().remove(0))
        .collect();
    assert_eq!(names, ["00001.jpg", "00002.jpg", "00003.jpg"]);
    assert!(a.field("nope").is_err());

    let m = read_mat(&fixture("cars_meta.mat")).unwrap();
    assert_eq!(
        m["class_names"].strings().unwrap(),
        [
            "AM General Hummer SUV 2000",
            "Ram C/V Cargo Van Minivan 2012"
        ]
    );
    // column-major 2×3 int32
    assert_eq!(m["big"].numbers().unwrap(), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
}
