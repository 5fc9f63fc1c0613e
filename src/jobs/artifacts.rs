//! A job's artifacts list, as the original tool read it: when the job ends, the first of
//! `<cwd>/.codex/artifacts.json` and `<job dir>/artifacts.json` (the job finds its directory in
//! `CODEXD_JOB_DIR`) that exists is read, and its `artifacts` array goes into the status's
//! `artifacts` field: `{"version":"1","artifacts":[{"name","type","path"},...]}`. The entries
//! are kept as the job wrote them. A file that is not JSON, has no `artifacts` array or is
//! larger than [`MAX_BYTES`] is not an error of the job: the status says why in `warning`.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest artifacts file read (the list goes into every status answer).
pub const MAX_BYTES: u64 = 256 * 1024;

/// What a job's artifacts file gave: the list, or why there is none.
#[derive(Debug, Default, PartialEq)]
pub struct Found {
    pub artifacts: Option<Vec<serde_json::Value>>,
    pub warning: Option<String>,
}

/// The files looked at, in order.
pub fn candidates(cwd: &Path, job_dir: &Path) -> [PathBuf; 2] {
    [cwd.join(".codex").join("artifacts.json"), job_dir.join("artifacts.json")]
}

/// Reads the first artifacts file of `candidates` that exists.
pub fn collect(candidates: &[PathBuf]) -> Found {
    let Some((path, file)) =
        candidates.iter().find_map(|p| std::fs::File::open(p).ok().map(|f| (p, f)))
    else {
        return Found::default();
    };
    let warn = |why: String| Found {
        artifacts: None,
        warning: Some(format!("{}: {why}; no artifacts recorded", path.display())),
    };
    let mut bytes = Vec::new();
    if let Err(e) = file.take(MAX_BYTES + 1).read_to_end(&mut bytes) {
        return warn(format!("cannot be read ({e})"));
    }
    if bytes.len() as u64 > MAX_BYTES {
        return warn(format!("larger than {} KiB", MAX_BYTES / 1024));
    }
    let value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(e) => return warn(format!("not valid JSON ({e})")),
    };
    match value.get("artifacts") {
        Some(serde_json::Value::Array(list)) if list.is_empty() => Found::default(),
        Some(serde_json::Value::Array(list)) => {
            Found { artifacts: Some(list.clone()), warning: None }
        }
        _ => warn("has no `artifacts` array".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_file_that_exists_is_read_and_a_bad_one_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let (cwd, job) = (dir.path().join("cwd"), dir.path().join("job"));
        std::fs::create_dir_all(cwd.join(".codex")).unwrap();
        std::fs::create_dir_all(&job).unwrap();
        let files = candidates(&cwd, &job);
        assert_eq!(collect(&files), Found::default());

        std::fs::write(&files[1], r#"{"version":"1","artifacts":[{"name":"m","path":"m.pt"}]}"#)
            .unwrap();
        let found = collect(&files);
        assert_eq!(found.artifacts.unwrap()[0]["path"], "m.pt");

        std::fs::write(&files[0], "{not json").unwrap();
        let found = collect(&files);
        assert_eq!(found.artifacts, None);
        assert!(found.warning.unwrap().contains("not valid JSON"));

        std::fs::write(&files[0], r#"{"artifacts":{}}"#).unwrap();
        assert!(collect(&files).warning.unwrap().contains("no `artifacts` array"));
        std::fs::write(&files[0], r#"{"artifacts":[]}"#).unwrap();
        assert_eq!(collect(&files), Found::default());
    }
}
