//! Tests of experiment files: parsing, defaults, checks, and the shipped examples.
use super::*;

#[test]
fn minimal_experiment_parses_with_defaults() {
    let exp: Experiment = toml::from_str(
        r#"
        name = "t"
        output = "out"
        [model]
        id = "m"
        [[datasets]]
        spec = "manifest:/d/m.csv"
        feature_points = ["vision.layer[-2].patch.mean", "projector.mean"]
        "#,
    )
    .unwrap();
    exp.validate().unwrap();
    assert_eq!(exp.all_models().unwrap()[0].dtype, "f32");
    assert_eq!(
        exp.probe.to_config().unwrap().c_grid,
        ProbeConfig::default().c_grid
    );
    let sim = exp.similarity.to_options().unwrap();
    assert!(exp.similarity.enabled);
    assert_eq!(
        (sim.split.as_str(), sim.k, sim.max_rows),
        ("test", 10, 10_000)
    );
    let bad = r#"
        name = "t"
        output = "o"
        typo = 1
        [model]
        id = "m"
        [[datasets]]
        spec = "manifest:/d"
        feature_points = ["projector.mean"]
    "#;
    assert!(toml::from_str::<Experiment>(bad).is_err());
}

#[test]
fn layer_sweeps_expand_in_order_without_duplicates() {
    let section = DatasetSection {
        spec: "manifest:/d/m.csv".into(),
        feature_points: vec![
            "vision.layer[-2].cls".into(),
            "vision.layer[-3:].cls".into(),
            "projector.mean".into(),
        ],
        levels: vec![],
    };
    let (_, points, _) = section.parse().unwrap();
    let names: Vec<String> = points.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        names,
        [
            "vision.layer[-2].cls",
            "vision.layer[-3].cls",
            "vision.layer[-1].cls",
            "projector.mean"
        ]
    );
    let bad = DatasetSection {
        feature_points: vec!["vision.layer[4:].cls".into()],
        ..section
    };
    let err = format!("{:#}", bad.parse().unwrap_err());
    assert!(
        err.contains("vision.layer[4:].cls") && err.contains("depth"),
        "{err}"
    );
}

#[test]
fn one_model_or_a_list_of_models() {
    let exp = |models: &str| -> Experiment {
        toml::from_str(&format!(
            "name = \"t\"\noutput = \"o\"\n{models}\n[[datasets]]\nspec = \"manifest:/d/m.csv\"\n\
             feature_points = [\"projector.mean\"]\n"
        ))
        .unwrap()
    };
    let one = exp("[model]\nid = \"a\"");
    assert_eq!(one.all_models().unwrap()[0].id, "a");
    let two = exp("[[models]]\nid = \"a\"\n[[models]]\nid = \"b\"\ndtype = \"bf16\"");
    let ids: Vec<&str> = two
        .all_models()
        .unwrap()
        .iter()
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    two.validate().unwrap();
    let err = exp("").validate().unwrap_err().to_string();
    assert!(err.contains("names no model"), "{err}");
    let err = exp("[[models]]\nid = \"a\"\n[[models]]\nid = \"a\"")
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("listed twice"), "{err}");
    // Written back (the demo writes the experiment it ran), one model stays `[model]`.
    let text = toml::to_string_pretty(&one).unwrap();
    assert!(
        text.contains("[model]") && !text.contains("models"),
        "{text}"
    );
}

#[test]
fn few_shot_settings_are_sorted_and_checked() {
    let probe = |section: &str| toml::from_str::<ProbeSection>(section).unwrap().to_config();
    let cfg = probe("").unwrap();
    assert!(cfg.few_shot.is_empty());
    assert_eq!(cfg.few_shot_draws, 3);
    let cfg = probe("shots = [16, 1, 4, 4]\nshot_draws = 5").unwrap();
    assert_eq!((cfg.few_shot, cfg.few_shot_draws), (vec![1, 4, 16], 5));
    for bad in ["shots = [0, 4]", "shots = [4]\nshot_draws = 0"] {
        let err = probe(bad).unwrap_err().to_string();
        assert!(err.contains("probe.shots"), "{bad}: {err}");
    }
}

#[test]
fn similarity_settings_are_checked_before_any_work() {
    let exp = |section: &str| -> Result<Experiment> {
        let exp: Experiment = toml::from_str(&format!(
            "name = \"t\"\noutput = \"o\"\n[model]\nid = \"m\"\n[[datasets]]\n\
             spec = \"manifest:/d/m.csv\"\nfeature_points = [\"projector.mean\"]\n\
             [similarity]\n{section}"
        ))?;
        exp.validate()?;
        Ok(exp)
    };
    let e = exp("split = \"train\"\nk = 5\nmax_rows = 2000\nenabled = false").unwrap();
    assert!(!e.similarity.enabled);
    assert_eq!(e.similarity.to_options().unwrap().k, 5);
    let err = exp("split = \"tset\"").unwrap_err();
    assert!(format!("{err:#}").contains("similarity.split"), "{err:#}");
    assert!(exp("k = 0").is_err());
    assert!(exp("neighbours = 3").is_err(), "unknown fields are refused");
}

#[test]
fn relative_paths_resolve_against_the_experiment_file() {
    let dir = std::env::temp_dir().join(format!("gapprobe-exp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("e.toml");
    std::fs::write(
        &path,
        r#"
        name = "t"
        output = "out"
        [model]
        id = "m"
        [[datasets]]
        spec = "cub:data/CUB?labelmap=maps/cub.csv"
        feature_points = ["projector.mean"]
        "#,
    )
    .unwrap();
    let exp = Experiment::load(&path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(exp.output, dir.join("out"));
    let spec: DatasetSpec = exp.datasets[0].spec.parse().unwrap();
    assert_eq!(spec.path, dir.join("data/CUB"));
    assert_eq!(
        spec.options["labelmap"],
        dir.join("maps/cub.csv").to_string_lossy()
    );
}

/// The example experiments shipped in `experiments/` stay valid (specs, feature points, probe
/// settings; the device is not opened).
#[test]
fn shipped_examples_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(e.path()).unwrap();
            let exp: Experiment =
                toml::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
            for d in &exp.datasets {
                d.parse()
                    .unwrap_or_else(|err| panic!("{}: {err:#}", e.path().display()));
            }
            exp.probe.to_config().unwrap();
            for m in exp.all_models().unwrap() {
                crate::device::parse_dtype(&m.dtype).unwrap();
            }
            zero_shot_options(&exp.zero_shot).unwrap();
            n += 1;
        }
    }
    assert!(n >= 1, "no example experiment in {}", dir.display());
}

/// README's experiment example is a valid experiment.
#[test]
fn readme_example_parses() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("```toml\n").expect("README has a toml block") + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let exp: Experiment = toml::from_str(&readme[start..end]).unwrap();
    for d in &exp.datasets {
        d.parse().unwrap();
    }
    exp.probe.to_config().unwrap();
    assert!(exp.zero_shot.enabled);
    let z = zero_shot_options(&exp.zero_shot).unwrap();
    assert_eq!(
        (z.limit, z.max_new_tokens, z.arms.len()),
        (Some(1000), 32, 2)
    );
}

fn zero_shot_options(z: &ZeroShotSection) -> Result<crate::pipeline::zero_shot::ZeroShotOptions> {
    let cpu = candle_core::Device::Cpu;
    z.to_options("m", vec![], &cpu, candle_core::DType::F32, Path::new("o"))
}

/// `[zero_shot]`: off unless enabled, Finer's questions unless replaced, and bad values refused
/// with the field named.
#[test]
fn zero_shot_section_defaults_and_checks() {
    let base = r#"
        name = "t"
        output = "o"
        [model]
        id = "m"
        [[datasets]]
        spec = "manifest:/d"
        feature_points = ["projector.mean"]
    "#;
    let exp: Experiment = toml::from_str(base).unwrap();
    assert!(!exp.zero_shot.enabled);
    assert!(!toml::to_string(&exp).unwrap().contains("zero_shot"));
    let z = zero_shot_options(&exp.zero_shot).unwrap();
    assert_eq!(
        z.questions[2],
        crate::pipeline::zero_shot::DEFAULT_QUESTIONS[2]
    );
    assert_eq!(z.arms, [crate::pipeline::zero_shot::Arm::Image]);

    let with = |section: &str| toml::from_str::<Experiment>(&format!("{base}\n{section}"));
    let exp =
        with("[zero_shot]\nenabled = true\nquestions = { fine = \"Which {concept}?\" }").unwrap();
    let z = zero_shot_options(&exp.zero_shot).unwrap();
    assert_eq!(z.questions[2], "Which {concept}?");
    assert_eq!(
        z.questions[1],
        crate::pipeline::zero_shot::DEFAULT_QUESTIONS[1]
    );
    assert!(toml::to_string(&exp).unwrap().contains("[zero_shot]"));

    let exp = with("[zero_shot]\nquestions = { finest = \"?\" }").unwrap();
    let err = format!("{:#}", zero_shot_options(&exp.zero_shot).unwrap_err());
    assert!(
        err.contains("zero_shot.questions") && err.contains("finest"),
        "{err}"
    );
    assert!(with("[zero_shot]\narms = [\"photo\"]").is_err());
    assert!(with("[zero_shot]\nlimt = 3").is_err());
    let exp = with("[zero_shot]\nmax_new_tokens = 0").unwrap();
    assert!(zero_shot_options(&exp.zero_shot).is_err());
}
