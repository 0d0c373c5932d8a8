//! The models rows come from, and how figures and tables name them: rows of one model name none
//! (its id is the report's "Model:" line); rows of several give each series, panel, group and
//! table row its model's short name, the last path component of its id
//! (`llava-hf/llava-1.5-7b-hf` → `llava-1.5-7b-hf`, `/x/y/model` → `model`), or its whole id
//! when another model's id ends the same way.

use crate::style::unique;
use crate::ResultRow;

/// The distinct models of some rows, in order of appearance, with their short names.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Models {
    ids: Vec<String>,
    names: Vec<String>,
}

/// The last path component of `id` (`/` or `\` separated, trailing separators ignored); the id
/// itself when that is empty.
pub(crate) fn short_name(id: &str) -> &str {
    let trimmed = id.trim_end_matches(['/', '\\']);
    match trimmed.rsplit(['/', '\\']).next() {
        Some(last) if !last.is_empty() => last,
        _ => id,
    }
}

impl Models {
    /// The distinct ids of `ids`, in order of appearance.
    pub fn new<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        let ids: Vec<String> = unique(ids.into_iter())
            .into_iter()
            .map(String::from)
            .collect();
        let names = ids
            .iter()
            .map(|id| {
                let short = short_name(id);
                let clash = ids.iter().any(|o| o != id && short_name(o) == short);
                if clash {
                    id.clone()
                } else {
                    short.to_string()
                }
            })
            .collect();
        Models { ids, names }
    }

    /// The models of `rows`.
    pub fn of(rows: &[ResultRow]) -> Self {
        Models::new(rows.iter().map(|r| r.model.as_str()))
    }

    /// Whether there is more than one model (and so whether anything names them).
    pub fn several(&self) -> bool {
        self.ids.len() > 1
    }

    /// The models' ids, in order of appearance.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Where `id` comes among the models (after all of them when unknown).
    pub fn rank(&self, id: &str) -> usize {
        self.ids
            .iter()
            .position(|m| m == id)
            .unwrap_or(self.ids.len())
    }

    /// The short name of `id` (the id itself when unknown).
    pub fn name<'a>(&'a self, id: &'a str) -> &'a str {
        self.ids
            .iter()
            .position(|m| m == id)
            .map_or(id, |i| self.names[i].as_str())
    }

    /// Sorts `items` so that those of one group (`key`'s first part: what identifies an item but
    /// its model, its second) sit together, groups in order of first appearance and each one's
    /// items by model; stable, so with one model (or one item a group) nothing moves.
    pub fn side_by_side<T, K: PartialEq + Clone>(
        &self,
        items: &mut [T],
        key: impl Fn(&T) -> (K, &str),
    ) {
        let groups = unique(items.iter().map(|t| key(t).0));
        items.sort_by_key(|t| {
            let (group, model) = key(t);
            (groups.iter().position(|g| *g == group), self.rank(model))
        });
    }

    /// A table's model column header after a cell: ` model |` with several models, else nothing.
    pub fn column_head(&self) -> &'static str {
        if self.several() {
            " model |"
        } else {
            ""
        }
    }

    /// The model column's `---|` in a table's rule line (nothing with one model).
    pub fn column_rule(&self) -> &'static str {
        if self.several() {
            "---|"
        } else {
            ""
        }
    }

    /// `id`'s model cell after another: ` name |` with several models, else nothing.
    pub fn cell(&self, id: &str) -> String {
        if self.several() {
            format!(" {} |", self.name(id))
        } else {
            String::new()
        }
    }

    /// What goes before a legend label or caption of `id`'s: `"{name} · "` when there are
    /// several models, nothing otherwise.
    pub fn prefix(&self, id: &str) -> String {
        if self.several() {
            format!("{} · ", self.name(id))
        } else {
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_the_last_path_component_unless_two_clash() {
        assert_eq!(short_name("llava-hf/llava-1.5-7b-hf"), "llava-1.5-7b-hf");
        assert_eq!(short_name("/x/y/model"), "model");
        assert_eq!(short_name("/x/y/model/"), "model");
        assert_eq!(short_name("C:\\w\\model"), "model");
        assert_eq!(short_name("plain"), "plain");
        assert_eq!(short_name("/"), "/");
        let m = Models::new([
            "llava-hf/llava-1.5-7b-hf",
            "/x/y/model",
            "llava-hf/llava-1.5-7b-hf",
        ]);
        assert!(m.several());
        assert_eq!(m.ids(), ["llava-hf/llava-1.5-7b-hf", "/x/y/model"]);
        assert_eq!(m.name("/x/y/model"), "model");
        assert_eq!(m.prefix("llava-hf/llava-1.5-7b-hf"), "llava-1.5-7b-hf · ");
        assert_eq!(m.rank("/x/y/model"), 1);
        // Two ids that end the same way keep their whole ids; a third keeps its short name.
        let m = Models::new(["a/model", "/b/model", "c/other"]);
        assert_eq!(
            [m.name("a/model"), m.name("/b/model"), m.name("c/other")],
            ["a/model", "/b/model", "other"]
        );
        // A group's items side by side, by model; groups in order of first appearance.
        let m = Models::new(["a", "b"]);
        let mut items = [("x", "b"), ("x", "a"), ("y", "a"), ("y", "b"), ("z", "b")];
        m.side_by_side(&mut items, |(g, model)| (*g, *model));
        assert_eq!(
            items,
            [("x", "a"), ("x", "b"), ("y", "a"), ("y", "b"), ("z", "b")]
        );
        // One model names nothing.
        let one = Models::new(["a/model", "a/model"]);
        assert!(!one.several());
        assert_eq!(one.prefix("a/model"), "");
    }
}
