//! Miniature copies of every supported dataset layout, written into a temp dir.
#![allow(dead_code)]

use gapprobe_features::datasets::mat::{write_mat, MatValue};
use std::path::{Path, PathBuf};

/// Writes a tiny JPEG (the colour varies with `seed`).
pub fn jpg(path: &Path, w: u32, h: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([seed.wrapping_mul(37), (x * 16) as u8, (y * 16) as u8])
    });
    img.save(path).unwrap();
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// CUB: 3 classes × 4 images (ids 1..=12; images 1,2 of each class train, 3,4 test).
pub fn cub(dir: &Path) -> PathBuf {
    let root = dir.join("CUB_200_2011");
    let classes = [
        "001.Black_footed_Albatross",
        "002.Laysan_Albatross",
        "017.Cardinal",
    ];
    let (mut images, mut labels, mut split, mut cls) =
        (String::new(), String::new(), String::new(), String::new());
    let mut id = 0;
    for (c, name) in classes.iter().enumerate() {
        cls += &format!("{} {name}\n", c + 1);
        for k in 0..4 {
            id += 1;
            let rel = format!("{name}/{name}_{k}.jpg");
            jpg(&root.join("images").join(&rel), 8, 6, id as u8);
            images += &format!("{id} {rel}\n");
            labels += &format!("{id} {}\n", c + 1);
            split += &format!("{id} {}\n", u8::from(k < 2));
        }
    }
    write(&root.join("images.txt"), &images);
    write(&root.join("classes.txt"), &cls);
    write(&root.join("image_class_labels.txt"), &labels);
    write(&root.join("train_test_split.txt"), &split);
    root
}

/// NABirds: Birds(0) → Ducks(1) → Mallard(10) → {Mallard (Male)(11), Mallard (Female/juvenile)(12)};
/// Ducks → Wood Duck(20); Birds → Hawks(2) → Red-tailed Hawk(295). Two images per leaf.
pub fn nabirds(dir: &Path) -> PathBuf {
    let root = dir.join("nabirds");
    write(
        &root.join("classes.txt"),
        "0 Birds\n1 Ducks, Geese, and Swans\n2 Hawks\n10 Mallard\n11 Mallard (Male)\n12 Mallard (Female/juvenile)\n20 Wood Duck\n295 Red-tailed Hawk\n",
    );
    write(
        &root.join("hierarchy.txt"),
        "1 0\n2 0\n10 1\n11 10\n12 10\n20 1\n295 2\n",
    );
    let (mut images, mut labels, mut split) = (String::new(), String::new(), String::new());
    let mut n = 0u8;
    for leaf in [11, 12, 20, 295] {
        for k in 0..2 {
            n += 1;
            let uuid = format!("{n:08x}-21dc-4d0c-bfe1-4cae3c85c829");
            let rel = format!("{leaf:04}/{}.jpg", uuid.replace('-', ""));
            jpg(&root.join("images").join(&rel), 6, 6, n);
            images += &format!("{uuid} {rel}\n");
            labels += &format!("{uuid} {leaf}\n");
            split += &format!("{uuid} {}\n", u8::from(k == 0));
        }
    }
    write(&root.join("images.txt"), &images);
    write(&root.join("image_class_labels.txt"), &labels);
    write(&root.join("train_test_split.txt"), &split);
    root
}

fn cell_of_strings(v: &[String]) -> MatValue {
    MatValue::Cell {
        dims: vec![v.len(), 1],
        items: v.iter().map(|s| MatValue::str(s)).collect(),
    }
}

/// Stanford Dogs: 2 breeds × 3 images, 2 train + 1 test each; lists/*.mat (compressed).
pub fn dogs(dir: &Path) -> PathBuf {
    let root = dir.join("dogs");
    let breeds = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel"];
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (b, folder) in breeds.iter().enumerate() {
        for k in 0..3 {
            let rel = format!("{folder}/{}_{k}.jpg", &folder[..9]);
            jpg(&root.join("Images").join(&rel), 10, 7, (b * 3 + k) as u8);
            if k < 2 {
                train.push((rel, b + 1))
            } else {
                test.push((rel, b + 1))
            }
        }
    }
    for (file, list) in [("train_list.mat", &train), ("test_list.mat", &test)] {
        dogs_list(&root.join("lists").join(file), list, true);
    }
    root
}

/// Writes a Dogs list file with `file_list`, `annotation_list`, `labels`.
pub fn dogs_list(path: &Path, list: &[(String, usize)], compress: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let files: Vec<String> = list.iter().map(|(f, _)| f.clone()).collect();
    let annos: Vec<String> = list
        .iter()
        .map(|(f, _)| f.trim_end_matches(".jpg").to_string())
        .collect();
    let labels: Vec<f64> = list.iter().map(|(_, l)| *l as f64).collect();
    write_mat(
        path,
        &[
            ("file_list", cell_of_strings(&files)),
            ("annotation_list", cell_of_strings(&annos)),
            ("labels", MatValue::column(&labels)),
        ],
        compress,
    )
    .unwrap();
}

pub const CAR_NAMES: [&str; 3] = [
    "AM General Hummer SUV 2000",
    "Ford F-150 Regular Cab 2012",
    "Acura TL Type-S 2008",
];

/// (file name, class) pairs.
type Annos = Vec<(String, usize)>;

/// (fname, class) for train and test: 2 + 1 images per class.
fn car_annos() -> (Annos, Annos) {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for c in 1..=3 {
        train.push((format!("{:05}.jpg", 2 * c - 1), c));
        train.push((format!("{:05}.jpg", 2 * c), c));
        test.push((format!("{c:05}.jpg"), c));
    }
    (train, test)
}

fn annotations(list: &[(String, usize)]) -> MatValue {
    let fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"];
    MatValue::Struct {
        dims: vec![1, list.len()],
        fields: fields.iter().map(|s| s.to_string()).collect(),
        items: list
            .iter()
            .map(|(f, c)| {
                let mut v: Vec<MatValue> = [1.0, 1.0, 5.0, 5.0, *c as f64]
                    .iter()
                    .map(|x| MatValue::Num {
                        dims: vec![1, 1],
                        data: vec![*x],
                    })
                    .collect();
                v.push(MatValue::str(f));
                v
            })
            .collect(),
    }
}

/// Stanford Cars devkit layout.
pub fn cars_devkit(dir: &Path) -> PathBuf {
    let root = dir.join("cars_devkit");
    std::fs::create_dir_all(root.join("devkit")).unwrap();
    let names: Vec<String> = CAR_NAMES.iter().map(|s| s.to_string()).collect();
    let meta = MatValue::Cell {
        dims: vec![1, 3],
        items: names.iter().map(|s| MatValue::str(s)).collect(),
    };
    write_mat(
        &root.join("devkit/cars_meta.mat"),
        &[("class_names", meta)],
        false,
    )
    .unwrap();
    let (train, test) = car_annos();
    write_mat(
        &root.join("devkit/cars_train_annos.mat"),
        &[("annotations", annotations(&train))],
        true,
    )
    .unwrap();
    write_mat(
        &root.join("cars_test_annos_withlabels.mat"),
        &[("annotations", annotations(&test))],
        false,
    )
    .unwrap();
    for (i, (f, _)) in train.iter().enumerate() {
        jpg(&root.join("cars_train").join(f), 12, 8, i as u8);
    }
    for (i, (f, _)) in test.iter().enumerate() {
        jpg(&root.join("cars_test").join(f), 12, 8, 100 + i as u8);
    }
    root
}

/// Stanford Cars CSV redistribution (images in car_data/car_data/{train,test}/<class>/).
pub fn cars_csv(dir: &Path) -> PathBuf {
    let root = dir.join("cars_csv");
    write(&root.join("names.csv"), &(CAR_NAMES.join("\n") + "\n"));
    let (train, test) = car_annos();
    for (file, sub, list) in [
        ("anno_train.csv", "train", &train),
        ("anno_test.csv", "test", &test),
    ] {
        let mut t = String::new();
        for (i, (f, c)) in list.iter().enumerate() {
            t += &format!("{f},1,1,5,5,{c}\n");
            jpg(
                &root
                    .join("car_data/car_data")
                    .join(sub)
                    .join(CAR_NAMES[c - 1])
                    .join(f),
                12,
                8,
                i as u8,
            );
        }
        write(&root.join(file), &t);
    }
    root
}

/// FGVC-Aircraft: 3 variants (2 families, 2 manufacturers), 1 image per variant per split.
pub fn aircraft(dir: &Path) -> PathBuf {
    let root = dir.join("fgvc-aircraft-2013b");
    let data = root.join("data");
    let variants = [
        ("707-320", "Boeing 707", "Boeing"),
        ("727-200", "Boeing 727", "Boeing"),
        ("A300B4", "A300", "Airbus"),
    ];
    let mut id = 1000000;
    for part in ["train", "val", "test"] {
        let (mut v, mut f, mut m) = (String::new(), String::new(), String::new());
        for (var, fam, man) in variants {
            id += 1;
            jpg(
                &data.join("images").join(format!("{id}.jpg")),
                16,
                32,
                (id % 200) as u8,
            );
            v += &format!("{id} {var}\n");
            f += &format!("{id} {fam}\n");
            m += &format!("{id} {man}\n");
        }
        write(&data.join(format!("images_variant_{part}.txt")), &v);
        write(&data.join(format!("images_family_{part}.txt")), &f);
        write(&data.join(format!("images_manufacturer_{part}.txt")), &m);
    }
    root
}

/// iNat 2021: 3 species in 2 families, 2 train_mini + 1 val image each.
pub fn inat(dir: &Path) -> PathBuf {
    let root = dir.join("inat");
    let cats = serde_json::json!([
        {"id": 0, "name": "Anas platyrhynchos", "common_name": "Mallard", "supercategory": "Birds", "kingdom": "Animalia", "phylum": "Chordata", "class": "Aves", "order": "Anseriformes", "family": "Anatidae", "genus": "Anas", "specific_epithet": "platyrhynchos", "image_dir_name": "00000_Anas"},
        {"id": 1, "name": "Aix sponsa", "common_name": "Wood Duck", "supercategory": "Birds", "kingdom": "Animalia", "phylum": "Chordata", "class": "Aves", "order": "Anseriformes", "family": "Anatidae", "genus": "Aix", "specific_epithet": "sponsa", "image_dir_name": "00001_Aix"},
        {"id": 7, "name": "Quercus alba", "common_name": "White Oak", "supercategory": "Plants", "kingdom": "Plantae", "phylum": "Tracheophyta", "class": "Magnoliopsida", "order": "Fagales", "family": "Fagaceae", "genus": "Quercus", "specific_epithet": "alba", "image_dir_name": "00007_Quercus"}
    ]);
    let mut image_id = 0;
    for (file, sub, per) in [("train_mini.json", "train_mini", 2), ("val.json", "val", 1)] {
        let (mut images, mut annos) = (Vec::new(), Vec::new());
        for c in cats.as_array().unwrap() {
            for k in 0..per {
                image_id += 1;
                let rel = format!("{sub}/{}/{k}.jpg", c["image_dir_name"].as_str().unwrap());
                jpg(&root.join(&rel), 9, 9, image_id as u8);
                images.push(
                    serde_json::json!({"id": image_id, "file_name": rel, "width": 9, "height": 9}),
                );
                annos.push(serde_json::json!({"id": image_id, "image_id": image_id, "category_id": c["id"]}));
            }
        }
        let j = serde_json::json!({"info": {}, "images": images, "annotations": annos, "categories": cats});
        write(&root.join(file), &serde_json::to_string_pretty(&j).unwrap());
    }
    root
}

/// ImageFolder without split folders: 2 classes × 5 images.
pub fn imagefolder(dir: &Path) -> PathBuf {
    let root = dir.join("folder");
    for c in ["cat", "dog"] {
        for k in 0..5 {
            jpg(&root.join(c).join(format!("{k}.jpg")), 5, 5, k);
        }
    }
    std::fs::write(root.join("cat/notes.txt"), "not an image").unwrap();
    root
}
