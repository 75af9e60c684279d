//! Names that become file or folder names under an output folder (dataset videos, exp_ids,
//! frame names, batch job ids): one check shared by `eval` and `batch`, so nothing a dataset or
//! a job list says can escape the output folder.

use std::path::Path;

/// Longest name accepted for something that becomes a file or folder name (255-byte file
/// systems, minus room for `.png`).
pub const MAX_NAME: usize = 250;

/// Rejects names that could escape the output folder or exceed a file name's length; the
/// message names `file` (where the name came from) and `what` it is. Callers wrap it in their
/// error kind (a bad dataset, a bad job).
pub fn check_name(file: &Path, what: &str, s: &str) -> Result<(), String> {
    let bad = s.is_empty()
        || s == "."
        || s == ".."
        || s.contains('/')
        || s.contains('\\')
        || s.contains('\0')
        || s.contains(':');
    if bad {
        return Err(format!(
            "{}: {what} {s:?} is not a plain name (path separators, `..` and empty names are rejected)",
            file.display()
        ));
    }
    // outputs are `<name>.png` (or `<name>/…`): keep room for the extension in 255 bytes
    if s.len() > MAX_NAME {
        return Err(format!(
            "{}: {what} {:?}… is {} bytes long; names that become file names may have at most {MAX_NAME}",
            file.display(),
            s.chars().take(40).collect::<String>(),
            s.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_of_file_name_length_pass() {
        assert!(check_name(Path::new("x"), "id", "abc_1").is_ok());
        let long = "e".repeat(MAX_NAME + 1);
        assert!(check_name(Path::new("x"), "exp_id", &long)
            .unwrap_err()
            .contains("bytes long"));
        for bad in ["", ".", "..", "a/b", "..\\x", "a\0", "c:x"] {
            assert!(check_name(Path::new("x"), "id", bad).is_err(), "{bad:?}");
        }
    }
}
