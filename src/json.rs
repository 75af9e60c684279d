//! JSON files in and out: one reader that names the file in every failure (and says whether
//! the text is not JSON at all or JSON of the wrong shape), one atomic pretty writer.

use crate::error::{Error, Result};
use crate::output::write_atomic;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

/// Reads `path` into `T`. A missing file is [`Error::NotFound`], an unreadable one
/// [`Error::Io`]; text that is not JSON, or JSON that does not fit `T`, becomes `bad(message)`
/// with the file named (the caller says whose fault that is: a checkpoint, a dataset, ...).
pub fn read_json<T: DeserializeOwned>(path: &Path, bad: fn(String) -> Error) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_path_buf(),
        },
        _ => Error::io(path, e),
    })?;
    parse_json(path, &text, bad)
}

/// [`read_json`] of text already read from `path`.
pub fn parse_json<T: DeserializeOwned>(path: &Path, text: &str, bad: fn(String) -> Error) -> Result<T> {
    serde_json::from_str(text).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => String::new(),
            _ => "not valid JSON: ".to_string(),
        };
        bad(format!("{}: {what}{e}", path.display()))
    })
}

/// `value` as pretty JSON (keys in the order the type declares them; maps we write are ordered
/// maps, so the same value always gives the same bytes).
pub fn to_pretty<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::Internal(format!("JSON: {e}")))
}

/// Writes `value` as pretty JSON to `path`, atomically.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let bytes = to_pretty(value)?;
    write_atomic(path, |w| {
        std::io::Write::write_all(w, &bytes).map_err(|e| Error::io(path, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Sizes {
        #[allow(dead_code)]
        width: usize,
    }

    #[test]
    fn failures_name_the_file_and_the_kind_of_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let e = read_json::<Sizes>(&p, Error::Checkpoint).unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        std::fs::write(&p, "{\"width\": ").unwrap();
        let e = read_json::<Sizes>(&p, Error::Checkpoint).unwrap_err();
        assert!(matches!(e, Error::Checkpoint(_)) && e.to_string().contains("config.json: not valid JSON"));
        std::fs::write(&p, "{\"width\": \"wide\"}").unwrap();
        let e = read_json::<Sizes>(&p, Error::Dataset).unwrap_err().to_string();
        assert!(
            e.contains("config.json: invalid type") && !e.contains("not valid JSON"),
            "{e}"
        );
        std::fs::write(&p, "{\"width\": 4}").unwrap();
        assert_eq!(read_json::<Sizes>(&p, Error::Checkpoint).unwrap().width, 4);
    }

    #[test]
    fn written_json_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.json");
        let v = std::collections::BTreeMap::from([("z", 1), ("a", 2)]);
        write_json(&p, &v).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\n  \"a\": 2,\n  \"z\": 1\n}"
        );
    }
}
