//! Unit tests of extraction: the device-side level table, and the writer thread.

use super::*;
use image::RgbImage;

/// The device-side lookup gives exactly what `PreprocessConfig::apply` computes on the CPU.
#[test]
fn planes_through_the_level_table_equal_apply() {
    let img = RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, ((x * y) % 256) as u8])
    });
    let pre = PreprocessConfig::clip(16);
    let (h, w) = pre.output_size();
    let dev = Device::Cpu;
    let planes = Tensor::from_vec(
        pre.apply_u8(&img).unwrap(),
        (1, 3, h as usize, w as usize),
        &dev,
    )
    .unwrap();
    let levels = Tensor::from_vec(pre.level_table(), 768, &dev).unwrap();
    let want = pre.apply(&img).unwrap();
    let got = planes::planes_to_input(&planes, &levels, DType::F32).unwrap();
    let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(got, want);
    // In bf16: the same values, rounded once.
    let got = planes::planes_to_input(&planes, &levels, DType::BF16).unwrap();
    let got: Vec<half::bf16> = got.flatten_all().unwrap().to_vec1().unwrap();
    let rounded: Vec<half::bf16> = want.iter().map(|&v| half::bf16::from_f32(v)).collect();
    assert_eq!(got, rounded);
}

mod writer {
    //! The writer thread: what `on_batch` sees when the model or the writer fails mid-run.
    use super::*;
    use crate::models::{write_random_llava, Checkpoint, RandomLlavaSpec};

    /// A two-layer random LLaVA on 16-pixel images, and `n` JPEGs (image `bad`, if any, corrupt).
    fn setup(
        n: usize,
        bad: Option<usize>,
    ) -> (tempfile::TempDir, VisionLanguageModel, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let model_dir = dir.path().join("model");
        write_random_llava(&model_dir, &RandomLlavaSpec::tiny()).unwrap();
        let ck = Checkpoint::resolve(model_dir.to_str().unwrap()).unwrap();
        let model = VisionLanguageModel::load(&ck, 2, &Device::Cpu, DType::F32).unwrap();
        let paths: Vec<PathBuf> = (0..n)
            .map(|i| {
                let p = dir.path().join(format!("img_{i:02}.jpg"));
                if Some(i) == bad {
                    std::fs::write(&p, b"not a jpeg").unwrap();
                } else {
                    image::RgbImage::from_fn(20, 18, |x, y| {
                        image::Rgb([(x * 12) as u8, (y * 13) as u8, (i * 20) as u8])
                    })
                    .save(&p)
                    .unwrap();
                }
                p
            })
            .collect();
        (dir, model, paths)
    }

    /// `extract_batches` of one point over `paths` in batches of 2.
    fn run(
        model: &VisionLanguageModel,
        paths: &[PathBuf],
        point: &str,
        on_batch: impl FnMut(usize, Vec<ArrayD<f32>>) -> Result<()> + Send,
    ) -> Result<()> {
        let opts = ExtractOptions {
            batch_size: BatchSize::Fixed(2),
            ..Default::default()
        };
        let points: Vec<FeaturePoint> = vec![point.parse()?];
        let pre = PreprocessConfig::clip(16);
        let bar = ProgressBar::hidden();
        extract_batches(model, &pre, paths, &[], &points, &opts, &bar, on_batch)
    }

    /// A corrupt image in the fourth batch: the three batches before it still reach `on_batch`,
    /// in order, and the error names the file.
    #[test]
    fn batches_computed_before_a_failure_are_all_written() {
        let (_dir, model, paths) = setup(10, Some(7));
        let mut seen = Vec::new();
        let err = run(&model, &paths, "projector.mean", |row0, feats| {
            assert_eq!(feats[0].shape(), [2, 32]);
            seen.push(row0);
            Ok(())
        })
        .unwrap_err();
        assert_eq!(seen, [0, 2, 4]);
        assert!(format!("{err:#}").contains("img_07.jpg"), "{err:#}");
    }

    /// The writer fails on the second batch: its error is returned and it is not called again.
    #[test]
    fn a_writer_failure_stops_the_extraction_with_its_error() {
        let (_dir, model, paths) = setup(12, None);
        let mut calls = 0;
        let err = run(
            &model,
            &paths,
            "vision.layer[-1].patch.none",
            |row0, feats| {
                calls += 1;
                assert_eq!(feats[0].shape(), [2, 4, 16]);
                if row0 == 2 {
                    bail!("disk full at row {row0}");
                }
                Ok(())
            },
        )
        .unwrap_err();
        assert_eq!(calls, 2);
        assert_eq!(format!("{err:#}"), "disk full at row 2");
    }
}
