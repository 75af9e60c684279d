//! Batch jobs: one video with one or more sentences, read from a CSV or JSONL manifest, a folder
//! of videos, or a JSON line on stdin, and checked before any model work.

use crate::error::{Error, Result};
use crate::names::check_name;
use crate::tokenizer::{check_instruction, Template};
use crate::video::{natural_cmp, Video};
use clap::ValueEnum;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One video to segment, with its prompts and output options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Where the job came from, for messages (`jobs.csv row 4`, `stdin line 2`, the file name).
    pub origin: String,
    /// Output folder name under `--out` (default: the video's file stem or folder name).
    pub id: String,
    /// The video (mp4, frame folder or image), resolved against the manifest's folder.
    pub video: PathBuf,
    /// The sentences.
    pub prompts: Vec<String>,
    /// How the prompts are worded.
    pub template: Template,
    /// Foreground value of the mask PNGs.
    pub mask_value: u8,
    /// Overlay PNGs and video.
    pub overlay: bool,
    /// COCO RLE JSON.
    pub rle: bool,
}

/// Per-job options a row may leave out: they come from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobDefaults {
    /// Template.
    pub template: Template,
    /// Mask foreground value.
    pub mask_value: u8,
    /// Overlays.
    pub overlay: bool,
    /// RLE JSON.
    pub rle: bool,
}

/// `prompt`: one sentence or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Prompts {
    One(String),
    Many(Vec<String>),
}

/// A row as written (JSONL object or CSV record); unknown fields are refused (typos).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    video: String,
    #[serde(alias = "prompts")]
    prompt: Prompts,
    id: Option<String>,
    template: Option<String>,
    mask_value: Option<u8>,
    overlay: Option<bool>,
    rle: Option<bool>,
}

/// A problem with one job, found before the model loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the job came from.
    pub origin: String,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.origin, self.what)
    }
}

/// The default id of a video: its file stem, or the folder's name.
fn default_id(video: &Path) -> String {
    let name = if video.is_dir() {
        video.file_name()
    } else {
        video.file_stem()
    };
    name.map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

impl Row {
    fn into_job(self, origin: String, base: &Path, d: &JobDefaults) -> std::result::Result<Job, Problem> {
        let bad = |what: String| Problem {
            origin: origin.clone(),
            what,
        };
        let video = base.join(&self.video);
        let template = match &self.template {
            None => d.template,
            Some(t) => Template::from_str(t, true).map_err(|_| {
                bad(format!(
                    "unknown template {t:?} (chat, referring, reason-sentence, reason-phrase)"
                ))
            })?,
        };
        let prompts = match self.prompt {
            Prompts::One(p) => vec![p],
            Prompts::Many(v) => v,
        };
        Ok(Job {
            id: self.id.unwrap_or_else(|| default_id(&video)),
            origin,
            video,
            prompts,
            template,
            mask_value: self.mask_value.unwrap_or(d.mask_value),
            overlay: self.overlay.unwrap_or(d.overlay),
            rle: self.rle.unwrap_or(d.rle),
        })
    }
}

/// Parses one JSON line as a job (`origin` names it in messages).
pub fn parse_json_line(
    line: &str,
    origin: String,
    base: &Path,
    d: &JobDefaults,
) -> std::result::Result<Job, Problem> {
    let row: Row = serde_json::from_str(line).map_err(|e| Problem {
        origin: origin.clone(),
        what: format!("not a job: {e}"),
    })?;
    row.into_job(origin, base, d)
}

/// A CSV cell as the JSON value serde expects: `prompt` may hold a JSON list, flags and numbers
/// are typed, empty optional cells are absent.
fn csv_value(column: &str, cell: &str) -> Option<serde_json::Value> {
    let cell = cell.trim();
    if cell.is_empty() && column != "prompt" && column != "prompts" {
        return None;
    }
    let parsed = match column {
        "prompt" | "prompts" if cell.starts_with('[') => serde_json::from_str(cell).ok(),
        "mask_value" => cell.parse::<u64>().ok().map(serde_json::Value::from),
        "overlay" | "rle" => match cell.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => Some(true.into()),
            "0" | "false" | "no" => Some(false.into()),
            _ => None,
        },
        _ => None,
    };
    Some(parsed.unwrap_or_else(|| cell.into()))
}

/// Reads a manifest: `.csv` (a header row naming the columns) or `.jsonl` (one JSON object a
/// line). Relative video paths resolve against the manifest's folder. Returns the jobs that
/// parsed and the problems of those that did not.
pub fn read_manifest(path: &Path, d: &JobDefaults) -> Result<(Vec<Job>, Vec<Problem>)> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_path_buf(),
        },
        _ => Error::io(path, e),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (mut jobs, mut problems) = (Vec::new(), Vec::new());
    let mut push = |r: std::result::Result<Job, Problem>| match r {
        Ok(j) => jobs.push(j),
        Err(p) => problems.push(p),
    };
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::Headers)
            .from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| Error::Usage(format!("{}: unreadable CSV header: {e}", path.display())))?
            .clone();
        for (i, record) in reader.records().enumerate() {
            let origin = format!("{name} row {}", i + 2);
            let row = record
                .map_err(|e| e.to_string())
                .and_then(|r| {
                    let obj: serde_json::Map<String, serde_json::Value> = headers
                        .iter()
                        .zip(r.iter())
                        .filter_map(|(h, c)| csv_value(h, c).map(|v| (h.to_string(), v)))
                        .collect();
                    serde_json::from_value::<Row>(obj.into()).map_err(|e| e.to_string())
                })
                .map_err(|what| Problem {
                    origin: origin.clone(),
                    what: format!("not a job: {what}"),
                });
            push(row.and_then(|r| r.into_job(origin, base, d)));
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if !line.trim().is_empty() {
                push(parse_json_line(line, format!("{name} line {}", i + 1), base, d));
            }
        }
    }
    if jobs.is_empty() && problems.is_empty() {
        return Err(Error::Usage(format!(
            "{}: the manifest lists no job",
            path.display()
        )));
    }
    Ok((jobs, problems))
}

/// Whether a folder entry can be a video: a video file, an image or a folder of frames.
fn is_video_entry(p: &Path) -> bool {
    const EXT: [&str; 9] = ["mp4", "m4v", "mov", "mkv", "webm", "avi", "jpg", "jpeg", "png"];
    p.is_dir()
        || p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXT.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// One job per entry of `dir` (video files, images, sub-folders of frames), all with `prompts`,
/// in natural order of their names.
pub fn read_folder(dir: &Path, prompts: &[String], d: &JobDefaults) -> Result<Vec<Job>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_video_entry(p))
        .collect();
    entries.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    if entries.is_empty() {
        return Err(Error::Usage(format!(
            "{}: no videos, images or frame folders in it",
            dir.display()
        )));
    }
    Ok(entries
        .into_iter()
        .map(|video| Job {
            origin: video
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            id: default_id(&video),
            video,
            prompts: prompts.to_vec(),
            template: d.template,
            mask_value: d.mask_value,
            overlay: d.overlay,
            rle: d.rle,
        })
        .collect())
}

/// Checks one job without the model: id, prompts, options, and that the video opens.
pub fn check_job(job: &Job) -> std::result::Result<(), Problem> {
    let bad = |what: String| Problem {
        origin: job.origin.clone(),
        what,
    };
    check_name(Path::new("id"), "id", &job.id).map_err(bad)?;
    if job.prompts.is_empty() || job.prompts.iter().any(|p| p.trim().is_empty()) {
        return Err(bad("every job needs at least one non-empty prompt".into()));
    }
    for p in &job.prompts {
        check_instruction(&job.template.instruction(p)).map_err(|e| bad(e.to_string()))?;
    }
    if job.mask_value == 0 {
        return Err(bad("mask_value must be 1–255".into()));
    }
    Video::open(&job.video)
        .map(|_| ())
        .map_err(|e| bad(e.to_string()))
}

/// Checks every job (see [`check_job`]) and that ids are unique; returns every problem.
pub fn check_jobs(jobs: &[Job]) -> Vec<Problem> {
    let mut problems: Vec<Problem> = jobs.iter().filter_map(|j| check_job(j).err()).collect();
    let mut seen: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for j in jobs {
        if let Some(first) = seen.insert(&j.id, &j.origin) {
            problems.push(Problem {
                origin: j.origin.clone(),
                what: format!(
                    "id {:?} is also used by {first}; give each job its own `id`",
                    j.id
                ),
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: JobDefaults = JobDefaults {
        template: Template::Referring,
        mask_value: 255,
        overlay: false,
        rle: false,
    };

    #[test]
    fn csv_and_jsonl_rows() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("jobs.csv");
        std::fs::write(
            &csv,
            "video,prompt,id,template,rle\nclips/a.mp4,the dog,,,\nb.mp4,\"[\"\"x\"\", \"\"y, z\"\"]\",bee,chat,yes\nc.mp4,,c1,bogus,\n",
        )
        .unwrap();
        let (jobs, problems) = read_manifest(&csv, &D).unwrap();
        assert_eq!(jobs.len(), 2, "{problems:?}");
        assert_eq!(
            (jobs[0].id.as_str(), jobs[0].video.clone()),
            ("a", dir.path().join("clips/a.mp4"))
        );
        assert_eq!(jobs[1].prompts, vec!["x".to_string(), "y, z".to_string()]);
        assert_eq!(
            (jobs[1].template, jobs[1].rle, jobs[1].id.as_str()),
            (Template::Chat, true, "bee")
        );
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .to_string()
                .starts_with("jobs.csv row 4: unknown template"),
            "{}",
            problems[0]
        );
        let jsonl = dir.path().join("jobs.jsonl");
        std::fs::write(
            &jsonl,
            "{\"video\": \"a.mp4\", \"prompt\": [\"p\"]}\n\n{\"video\": \"b.mp4\", \"promt\": \"typo\"}\n",
        )
        .unwrap();
        let (jobs, problems) = read_manifest(&jsonl, &D).unwrap();
        assert_eq!(jobs.len(), 1);
        assert!(problems[0].to_string().contains("line 3") && problems[0].what.contains("promt"));
    }

    #[test]
    fn every_problem_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.png");
        image::RgbImage::new(8, 8).save(&img).unwrap();
        let job = |id: &str, video: &Path, prompt: &str| Job {
            origin: format!("job {id}"),
            id: id.into(),
            video: video.to_path_buf(),
            prompts: vec![prompt.into()],
            template: Template::Chat,
            mask_value: 255,
            overlay: false,
            rle: false,
        };
        let jobs = [
            job("ok", &img, "the dog"),
            job("ok", &img, "the cat"),
            job("gone", &dir.path().join("missing.mp4"), "x"),
            job("../up", &img, "x"),
            job("seg", &img, "a [SEG] b"),
        ];
        let p = check_jobs(&jobs);
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(p.len(), 4, "{text:?}");
        assert!(text.iter().any(|t| t.contains("missing.mp4")));
        assert!(text.iter().any(|t| t.contains("also used by job ok")));
    }
}
