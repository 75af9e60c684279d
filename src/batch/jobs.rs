//! Batch jobs: one video with one or more sentences, read from a CSV or JSONL manifest, a folder
//! of videos, or a JSON line on stdin, and checked before any model work.

use crate::error::{Error, Result};
use crate::names::check_name;
use crate::segment::annotation::Annotation;
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
    /// Corrections for XMem++ (`--propagate` runs), mask paths resolved against the manifest's
    /// folder.
    pub annotate: Vec<Annotation>,
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
    /// `[PROMPT:]FRAME=MASK.png`, one or a list (in a CSV cell: separated by `;`).
    annotate: Option<Prompts>,
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
        let annotate = match self.annotate {
            None => Vec::new(),
            Some(Prompts::One(a)) => a
                .split(';')
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect(),
            Some(Prompts::Many(v)) => v,
        };
        let annotate = annotate
            .iter()
            .map(|a| {
                let mut a: Annotation = a.parse().map_err(|e: String| bad(format!("annotate: {e}")))?;
                a.mask = base.join(&a.mask);
                Ok(a)
            })
            .collect::<std::result::Result<Vec<_>, Problem>>()?;
        Ok(Job {
            id: self.id.unwrap_or_else(|| default_id(&video)),
            origin,
            video,
            prompts,
            template,
            mask_value: self.mask_value.unwrap_or(d.mask_value),
            overlay: self.overlay.unwrap_or(d.overlay),
            rle: self.rle.unwrap_or(d.rle),
            annotate,
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
        "prompt" | "prompts" | "annotate" if cell.starts_with('[') => serde_json::from_str(cell).ok(),
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

/// What a manifest or folder holds: the jobs that parsed, and a problem for every row or entry
/// that is not a job (each named by its line or file name, so nothing is dropped silently).
pub type Listed = (Vec<Job>, Vec<Problem>);

/// Reads a manifest: `.csv` (a header row naming the columns) or `.jsonl` (one JSON object a
/// line). Relative video paths resolve against the manifest's folder.
pub fn read_manifest(path: &Path, d: &JobDefaults) -> Result<Listed> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::input(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (jobs, problems) = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
        parse_csv(&name, &text, base, d).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?
    } else {
        parse_jsonl(&name, &text, base, d)
    };
    if jobs.is_empty() && problems.is_empty() {
        return Err(Error::Usage(format!(
            "{}: the manifest lists no job",
            path.display()
        )));
    }
    Ok((jobs, problems))
}

/// The jobs of a JSONL manifest's text; `name` names it in the problems.
pub fn parse_jsonl(name: &str, text: &str, base: &Path, d: &JobDefaults) -> Listed {
    let (mut jobs, mut problems) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        if !line.trim().is_empty() {
            match parse_json_line(line, format!("{name} line {}", i + 1), base, d) {
                Ok(j) => jobs.push(j),
                Err(p) => problems.push(p),
            }
        }
    }
    (jobs, problems)
}

/// The jobs of a CSV manifest's text (a header row naming the columns, each at most once). Rows
/// are named by the line they start on; a row that does not parse and spans several lines (an
/// unterminated quote) also reports each line it swallowed.
pub fn parse_csv(
    name: &str,
    text: &str,
    base: &Path,
    d: &JobDefaults,
) -> std::result::Result<Listed, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::Headers)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| format!("unreadable CSV header: {e}"))?
        .clone();
    for (k, h) in headers.iter().enumerate() {
        if headers.iter().take(k).any(|x| x == h) {
            return Err(format!("the column `{h}` is named twice in the header"));
        }
    }
    let mut rows: Vec<(u64, std::result::Result<Job, Problem>)> = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let read = reader.read_record(&mut record);
        let position = match &read {
            Err(e) => e.position().cloned(),
            Ok(_) => record.position().cloned(),
        };
        let line = position.map_or(0, |p| p.line());
        let origin = format!("{name} line {line}");
        let row = match read {
            Ok(false) => break,
            Ok(true) => csv_row(&headers, &record).map_err(|what| (origin.clone(), what)),
            Err(e) => Err((origin.clone(), e.to_string())),
        };
        let row = row
            .map_err(|(origin, what)| Problem {
                origin,
                what: format!("not a job: {what}"),
            })
            .and_then(|r| r.into_job(origin, base, d));
        rows.push((line, row));
    }
    if let Some(open) = unclosed_quote(text) {
        // the row holding the unclosed quote swallowed every line after it, whatever it parsed to
        for (line, row) in rows.iter_mut().filter(|(l, _)| *l == open) {
            *row = Err(Problem {
                origin: format!("{name} line {line}"),
                what: "not a job: a quote opened on this line is never closed".into(),
            });
        }
    }
    let total = text.lines().count() as u64;
    let mut listed = (Vec::new(), Vec::new());
    for (k, (line, row)) in rows.iter().enumerate() {
        match row {
            Ok(j) => listed.0.push(j.clone()),
            Err(p) => {
                listed.1.push(p.clone());
                let end = rows.get(k + 1).map_or(total + 1, |(l, _)| *l);
                listed.1.extend(swallowed(name, text, *line, end));
            }
        }
    }
    Ok(listed)
}

/// The line on which a quoted CSV field opens and never closes, if one does (a quote opens a
/// field only at its start; `""` inside one is a quote).
fn unclosed_quote(text: &str) -> Option<u64> {
    let (mut line, mut opened) = (1u64, None);
    let mut field_start = true;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (opened.is_some(), c) {
            (false, '"') if field_start => opened = Some(line),
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
            }
            (true, '"') => opened = None,
            _ => {}
        }
        if c == '\n' {
            line += 1;
        }
        field_start = opened.is_none() && (c == ',' || c == '\n');
    }
    opened
}

/// A CSV record as a row: `prompt` may hold a JSON list, flags and numbers are typed, empty
/// optional cells are absent.
fn csv_row(headers: &csv::StringRecord, record: &csv::StringRecord) -> std::result::Result<Row, String> {
    let obj: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .zip(record.iter())
        .filter_map(|(h, c)| csv_value(h, c).map(|v| (h.to_string(), v)))
        .collect();
    serde_json::from_value::<Row>(obj.into()).map_err(|e| e.to_string())
}

/// The non-empty lines `start + 1 .. end` of a row that failed at `start`: rows the reader took
/// into it (an unterminated quote runs to the end of the file).
fn swallowed(name: &str, text: &str, start: u64, end: u64) -> Vec<Problem> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l))
        .filter(|(n, l)| *n > start && *n < end && !l.trim().is_empty())
        .map(|(n, _)| Problem {
            origin: format!("{name} line {n}"),
            what: format!(
                "not run: it is inside the row that starts at line {start}, which did not parse \
                 (an unterminated quote?)"
            ),
        })
        .collect()
}

/// Whether a folder entry is meant as a video (by its name: a video file, an image, or a
/// folder); hidden entries (`.DS_Store`, AppleDouble `._*`) are not.
fn looks_like_video(p: &Path) -> bool {
    const EXT: [&str; 9] = ["mp4", "m4v", "mov", "mkv", "webm", "avi", "jpg", "jpeg", "png"];
    let hidden = p
        .file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
    !hidden
        && (p.is_dir()
            || p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXT.iter().any(|x| x.eq_ignore_ascii_case(e))))
}

/// One job per entry of `dir` (video files, images, sub-folders of frames), all with `prompts`,
/// in natural order of their names; an entry whose name is not UTF-8 is a problem (a FIFO or
/// other non-file is a job that [`check_job`] refuses without reading it).
pub fn read_folder(dir: &Path, prompts: &[String], d: &JobDefaults) -> Result<Listed> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::input(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| looks_like_video(p))
        .collect();
    entries.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    if entries.is_empty() {
        return Err(Error::Usage(format!(
            "{}: no videos, images or frame folders in it",
            dir.display()
        )));
    }
    let mut listed = (Vec::new(), Vec::new());
    for video in entries {
        let origin = video
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if video.file_name().and_then(|n| n.to_str()).is_none() {
            let what = "its name is not UTF-8, so no output folder can be named after it: rename it";
            listed.1.push(Problem {
                origin,
                what: what.into(),
            });
            continue;
        }
        listed.0.push(Job {
            origin,
            id: default_id(&video),
            video,
            prompts: prompts.to_vec(),
            template: d.template,
            mask_value: d.mask_value,
            overlay: d.overlay,
            rle: d.rle,
            annotate: Vec::new(),
        });
    }
    Ok(listed)
}

/// Names of videolisa's own files in a batch output folder, which no job id may take.
pub const RESERVED_IDS: [&str; 2] = [super::RESULTS_FILE, crate::run_manifest::MANIFEST_FILE];

/// Checks one job without the model: id, prompts, options, and that the video opens.
pub fn check_job(job: &Job) -> std::result::Result<(), Problem> {
    let bad = |what: String| Problem {
        origin: job.origin.clone(),
        what,
    };
    check_name(Path::new("id"), "id", &job.id).map_err(bad)?;
    if RESERVED_IDS.contains(&job.id.as_str()) || crate::lock::is_lock_file(&job.id) {
        return Err(bad(format!(
            "id {:?} is a name videolisa itself uses in the output folder; give the job another `id`",
            job.id
        )));
    }
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

/// A problem for each job whose id an earlier job of `jobs` already has (their outputs would
/// overwrite each other).
pub fn duplicate_ids(jobs: &[Job]) -> Vec<Problem> {
    let mut problems = Vec::new();
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
                .starts_with("jobs.csv line 4: unknown template"),
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
            annotate: Vec::new(),
        };
        let jobs = [
            job("ok", &img, "the dog"),
            job("ok", &img, "the cat"),
            job("gone", &dir.path().join("missing.mp4"), "x"),
            job("../up", &img, "x"),
            job("seg", &img, "a [SEG] b"),
            job("results.jsonl", &img, "x"),
        ];
        let mut p: Vec<Problem> = jobs.iter().filter_map(|j| check_job(j).err()).collect();
        p.extend(duplicate_ids(&jobs));
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(p.len(), 5, "{text:?}");
        assert!(text.iter().any(|t| t.contains("missing.mp4")));
        assert!(text.iter().any(|t| t.contains("also used by job ok")));
        assert!(text.iter().any(|t| t.contains("videolisa itself uses")));
    }

    #[test]
    fn csv_rows_are_named_by_line_and_never_swallowed() {
        let base = Path::new("/data");
        let text = "video,prompt\na.mp4,\"a dog\non two lines\"\nb.mp4,\"open\nc.mp4,x\n\nd.mp4,y\n";
        let (jobs, problems) = parse_csv("j.csv", text, base, &D).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].prompts, ["a dog\non two lines"]);
        assert_eq!(jobs[0].origin, "j.csv line 2");
        let origins: Vec<&str> = problems.iter().map(|p| p.origin.as_str()).collect();
        assert_eq!(
            origins,
            ["j.csv line 4", "j.csv line 5", "j.csv line 7"],
            "{problems:?}"
        );
        let e = parse_csv("j.csv", "video,prompt,video\na,b,c\n", base, &D).unwrap_err();
        assert!(e.contains("`video` is named twice"), "{e}");
    }

    #[test]
    fn rows_carry_corrections() {
        let base = Path::new("/data");
        let text = "video,prompt,annotate\na.mp4,the dog,5=fix5.png; 1:9=m/fix9.png\nb.mp4,x,nonsense\n";
        let (jobs, problems) = parse_csv("j.csv", text, base, &D).unwrap();
        let a = &jobs[0].annotate;
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].prompt, a[0].frame.as_str()), (0, "5"));
        assert_eq!(a[1].mask, Path::new("/data/m/fix9.png"));
        assert!(problems[0].what.contains("annotate:"), "{problems:?}");
        let line = r#"{"video": "a.mp4", "prompt": "x", "annotate": ["3=a.png", "0:4=b.png"]}"#;
        let job = parse_json_line(line, "l1".into(), base, &D).unwrap();
        assert_eq!(job.annotate.len(), 2);
    }
}
