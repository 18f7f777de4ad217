//! Reads spec files into [`Resource`]s, turning every problem into a
//! `file:line:col` diagnostic with a hint.
//!
//! A file may hold several YAML documents. Each document is parsed on its own, so a
//! broken document stops only the pipeline it declares: the others still load.
//! Two documents with the same `metadata.name` are both rejected, since neither can be
//! trusted to be the one the operator meant. This module reads files and does
//! nothing else; it never panics on input.
//!
//! It is long (about 800 lines) because every rule that turns a parser error into
//! a `file:line:col` message with a hint lives here, next to the walk and the
//! cross-document checks that share its locations; splitting them would scatter
//! one concern, the operator's error message, over several files.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::{API_VERSION, BackupPipeline, Resource, RestoreTarget, SpecSection, VolumeLocation};

/// Spec files larger than this are refused unread: a real spec is a few KiB, and a
/// huge one is a mistake or an attack on the parser.
pub const MAX_SPEC_FILE_BYTES: u64 = 1024 * 1024;

/// Parser budgets: far above any real spec, far below what hurts (alias bombs).
fn parse_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 200_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_depth: 64,
        },
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    }
}

/// A document loaded from a spec file, with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedResource {
    /// The file.
    pub file: PathBuf,
    /// The line where its document starts.
    pub line: u64,
    /// The document.
    pub resource: Resource,
}

/// One problem with the specs, located in a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpecProblem {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The pipeline the problem stops, when its name could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// The YAML around the problem with a caret under it, for people (`validate`'s
    /// text output); never in JSON.
    #[serde(skip)]
    pub snippet: Option<String>,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Everything found under the spec paths: the pipelines that loaded and the problems.
#[derive(Debug, Clone, Default)]
pub struct LoadedSpecs {
    /// Valid documents of every kind, sorted by name.
    pub resources: Vec<LoadedResource>,
    /// Problems, in file order.
    pub problems: Vec<SpecProblem>,
    /// Not one document was found: an empty directory, or only files that are not
    /// `*.yaml`. Never a quiet success: the problems say so too.
    pub nothing_found: bool,
    /// The per-host directories found under a `--specs` directory of hosts, each
    /// checked on its own; empty when `--specs` named one host's specs.
    pub hosts: Vec<PathBuf>,
}

/// Loads every `*.yaml` / `*.yml` file under `paths` (files, or directories walked
/// recursively in name order, following symbolic links, skipping hidden entries).
///
/// A directory given in `paths` that holds no spec file itself, only
/// subdirectories, holds one directory per host (`specs/annex`, `specs/science`):
/// each subdirectory is checked as a set of its own, so documents of different
/// hosts may name the same volume. Everything else given in `paths` is one set.
pub fn load_specs(paths: &[PathBuf]) -> LoadedSpecs {
    let mut shared = Vec::new();
    let mut sets = Vec::new();
    let mut hosts = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match host_directories(path) {
            Some(dirs) => {
                for dir in dirs {
                    let mut files = Vec::new();
                    collect_files(&dir, &mut files, &mut problems);
                    sets.push(files);
                    hosts.push(dir);
                }
            }
            None => collect_files(path, &mut shared, &mut problems),
        }
    }
    sets.push(shared);
    let mut resources = Vec::new();
    for files in &sets {
        let mut set = Vec::new();
        for file in files {
            load_file(file, &mut set, &mut problems);
        }
        reject_duplicate_names(&mut set, &mut problems);
        reject_overlapping_paths(&mut set, &mut problems);
        resources.append(&mut set);
    }
    resources.sort_by(|a, b| a.resource.name().cmp(b.resource.name()));
    let nothing_found = resources.is_empty() && problems.is_empty();
    if nothing_found {
        let under: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        problems.push(SpecProblem {
            file: paths.first().cloned().unwrap_or_default(),
            line: 1,
            column: 1,
            message: format!(
                "no specs found under {}, expected *.yaml files",
                under.join(", ")
            ),
            hint: Some(
                "point --specs at the directory of this host's BackupPipeline and RestoreTarget documents (*.yaml or *.yml; names starting with a dot are skipped)"
                    .to_string(),
            ),
            pipeline: None,
            snippet: None,
        });
    }
    LoadedSpecs {
        resources,
        problems,
        nothing_found,
        hosts,
    }
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'))
}

fn is_spec_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// The per-host subdirectories of `path`, when it is a directory that holds no spec
/// file of its own but (non-hidden) subdirectories; `None` otherwise.
fn host_directories(path: &Path) -> Option<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(path).ok()? {
        let entry = entry.ok()?.path();
        if is_hidden(&entry) {
            continue;
        }
        if entry.is_dir() {
            dirs.push(entry);
        } else if is_spec_file(&entry) {
            return None;
        }
    }
    dirs.sort();
    (!dirs.is_empty()).then_some(dirs)
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>, problems: &mut Vec<SpecProblem>) {
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            problems.push(file_problem(
                path,
                format!("cannot read spec path: {e}"),
                "pass an existing file or directory with --specs",
            ));
            return;
        }
    };
    if metadata.is_file() {
        files.push(path.to_path_buf());
        return;
    }
    // walkdir follows links as the operator's shell would, and stops at a link
    // that leads back to a directory above it: one problem, not one per lap.
    let walk = walkdir::WalkDir::new(path)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !is_hidden(e.path()));
    for entry in walk {
        match entry {
            Ok(entry) => {
                if entry.file_type().is_file() && is_spec_file(entry.path()) {
                    files.push(entry.into_path());
                }
            }
            Err(e) => {
                let at = e.path().unwrap_or(path).to_path_buf();
                let problem = match e.loop_ancestor() {
                    Some(ancestor) => file_problem(
                        &at,
                        format!(
                            "symbolic link loop: {} leads back to {}, which is already being read; not followed",
                            at.display(),
                            ancestor.display()
                        ),
                        "remove the link or point it outside the specs directory",
                    ),
                    None => file_problem(
                        &at,
                        format!(
                            "cannot read spec path: {}",
                            e.io_error()
                                .map_or_else(|| e.to_string(), ToString::to_string)
                        ),
                        "check the path and its permissions",
                    ),
                };
                problems.push(problem);
            }
        }
    }
}

fn file_problem(path: &Path, message: String, hint: &str) -> SpecProblem {
    SpecProblem {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
        message,
        hint: Some(hint.to_string()),
        pipeline: None,
        snippet: None,
    }
}

fn load_file(file: &Path, pipelines: &mut Vec<LoadedResource>, problems: &mut Vec<SpecProblem>) {
    match std::fs::metadata(file) {
        Ok(m) if m.len() > MAX_SPEC_FILE_BYTES => {
            problems.push(file_problem(
                file,
                format!(
                    "spec file is {} bytes, more than the {MAX_SPEC_FILE_BYTES} allowed",
                    m.len()
                ),
                "split it into several files; a pipeline spec is a few KiB",
            ));
            return;
        }
        _ => {}
    }
    let text = match std::fs::read(file) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                problems.push(file_problem(
                    file,
                    "spec file is not UTF-8 text".into(),
                    "save it as UTF-8",
                ));
                return;
            }
        },
        Err(e) => {
            problems.push(file_problem(
                file,
                format!("cannot read spec file: {e}"),
                "check the file's permissions",
            ));
            return;
        }
    };
    load_text(file, &text, pipelines, problems);
}

/// Parses the text of one spec file (named `file` in diagnostics); what loads goes to
/// `pipelines`, what does not to `problems`. Pure: no I/O.
pub fn load_text(
    file: &Path,
    text: &str,
    pipelines: &mut Vec<LoadedResource>,
    problems: &mut Vec<SpecProblem>,
) {
    for document in split_documents(text) {
        match parse_document(&document.text) {
            Ok(resource) => pipelines.push(LoadedResource {
                file: file.to_path_buf(),
                line: document.first_line,
                resource,
            }),
            Err(failure) => {
                let Failure {
                    mut problem,
                    parse_error,
                } = *failure;
                problem.file = file.to_path_buf();
                problem.line += document.first_line - 1;
                problem.snippet =
                    parse_error.and_then(|e| snippet(&e, file, document.first_line - 1));
                problems.push(problem);
            }
        }
    }
}

/// A YAML document cut out of a file, padded so columns stay where they were.
struct Document {
    first_line: u64,
    text: String,
}

/// Splits a YAML stream at its document markers (`---` and `...` at the start of a
/// line). YAML forbids those markers inside any scalar, so a line-based split is exact.
/// The marker itself is blanked rather than removed so that content after `---` on
/// the same line keeps its column.
fn split_documents(text: &str) -> Vec<Document> {
    let mut documents = Vec::new();
    let mut current = String::new();
    let mut first_line = 1u64;
    let is_marker = |line: &str, marker: &str| {
        line.strip_prefix(marker)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
    };
    for (index, line) in text.split('\n').enumerate() {
        let line_number = index as u64 + 1;
        if is_marker(line, "---") || is_marker(line, "...") {
            push_document(&mut documents, std::mem::take(&mut current), first_line);
            first_line = line_number;
            if is_marker(line, "---") {
                current.push_str("   ");
                current.push_str(&line[3..]);
            }
            current.push('\n');
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    push_document(&mut documents, current, first_line);
    documents
}

fn push_document(documents: &mut Vec<Document>, text: String, first_line: u64) {
    let meaningful = text.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#') && !t.starts_with('%')
    });
    if meaningful {
        documents.push(Document { first_line, text });
    }
}

/// Only the fields that say which kind a document is; everything else is ignored here.
#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion")]
    api_version: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    metadata: Option<NameOnly>,
}

/// Where the sections of `spec` start, to point at one.
#[derive(Deserialize)]
struct SectionsAt {
    spec: Option<SpecSectionsAt>,
}

#[derive(Deserialize)]
struct SpecSectionsAt {
    #[serde(rename = "recoveredVolume")]
    recovered_volume: Option<Spanned<serde::de::IgnoredAny>>,
    starport: Option<Spanned<serde::de::IgnoredAny>>,
    source: Option<Spanned<serde::de::IgnoredAny>>,
    volume: Option<Spanned<serde::de::IgnoredAny>>,
    consumers: Option<Spanned<serde::de::IgnoredAny>>,
}

/// Where `section` of the document in `text` starts, to point a placement error at.
fn section_location(text: &str, section: SpecSection) -> Location {
    serde_saphyr::from_str_with_options::<SectionsAt>(text, parse_options())
        .ok()
        .and_then(|v| v.spec)
        .and_then(|s| match section {
            SpecSection::RecoveredVolume => s.recovered_volume,
            SpecSection::Starport => s.starport,
            SpecSection::Source => s.source,
            SpecSection::Volume => s.volume,
            SpecSection::Consumers => s.consumers,
        })
        .map_or(Location::UNKNOWN, |v| v.referenced)
}

#[derive(Deserialize)]
struct NameOnly {
    name: Option<String>,
}

/// Why a document did not load: the problem, and the parser's error when the
/// parser found it (it can show the YAML around it).
struct Failure {
    problem: SpecProblem,
    parse_error: Option<serde_saphyr::Error>,
}

impl From<SpecProblem> for Box<Failure> {
    fn from(problem: SpecProblem) -> Self {
        Box::new(Failure {
            problem,
            parse_error: None,
        })
    }
}

/// The parser's rendering of the lines around the error with a caret under it,
/// without its first line (the message, which the problem already says).
fn snippet(error: &serde_saphyr::Error, file: &Path, lines_before: u64) -> Option<String> {
    let name = file.display().to_string();
    let rendered = error.render_with_options(serde_saphyr::render_options! {
        line_offset: lines_before,
        source_name: Some(name.as_str()),
    });
    let (_, context) = rendered.split_once('\n')?;
    context
        .trim_start()
        .starts_with("-->")
        .then(|| context.trim_end().to_string())
}

fn parse_document(text: &str) -> Result<Resource, Box<Failure>> {
    let meta: TypeMeta = serde_saphyr::from_str_with_options(text, parse_options())
        .map_err(|e| yaml_problem(e, None))?;
    let pipeline_name = meta.metadata.and_then(|m| m.name);
    let start = Location::UNKNOWN;
    let api_version = meta.api_version.ok_or_else(|| {
        located(
            start,
            "document has no apiVersion".into(),
            format!("add `apiVersion: {API_VERSION}`"),
            pipeline_name.clone(),
        )
    })?;
    if api_version.value != API_VERSION {
        return Err(located(
            api_version.referenced,
            format!("unsupported apiVersion `{}`", api_version.value),
            format!("use `apiVersion: {API_VERSION}`"),
            pipeline_name,
        )
        .into());
    }
    let kind = meta.kind.ok_or_else(|| {
        located(
            start,
            "document has no kind".into(),
            "add `kind: BackupPipeline` or `kind: RestoreTarget`".into(),
            pipeline_name.clone(),
        )
    })?;
    match kind.value.as_str() {
        "BackupPipeline" => {
            let pipeline =
                serde_saphyr::from_str_with_options::<BackupPipeline>(text, parse_options())
                    .map_err(|e| yaml_problem(e, pipeline_name.clone()))?;
            pipeline.check_placement().map_err(|(section, message)| {
                located(
                    section_location(text, section),
                    message,
                    "see `reconciler schema` for recoveredVolume, starport and barman".into(),
                    pipeline_name,
                )
            })?;
            Ok(Resource::BackupPipeline(pipeline))
        }
        "RestoreTarget" => {
            let target =
                serde_saphyr::from_str_with_options::<RestoreTarget>(text, parse_options())
                    .map_err(|e| yaml_problem(e, pipeline_name.clone()))?;
            target.check_placement().map_err(|(section, message)| {
                located(
                    section_location(text, section),
                    message,
                    "see `reconciler schema --kind RestoreTarget` for source, volume and consumers"
                        .into(),
                    pipeline_name,
                )
            })?;
            Ok(Resource::RestoreTarget(target))
        }
        other => Err(located(
            kind.referenced,
            format!("unknown kind `{other}`"),
            "the known kinds are: BackupPipeline, RestoreTarget".into(),
            pipeline_name,
        )
        .into()),
    }
}

fn located(
    location: Location,
    message: String,
    hint: String,
    pipeline: Option<String>,
) -> SpecProblem {
    let (line, column) = if location == Location::UNKNOWN {
        (1, 1)
    } else {
        (location.line(), location.column())
    };
    SpecProblem {
        file: PathBuf::new(),
        line,
        column,
        message,
        hint: Some(hint),
        pipeline,
        snippet: None,
    }
}

/// Turns a parser error into a problem: the message without its location suffix
/// (the location goes in front), plus a hint chosen from the kind of mistake.
fn yaml_problem(error: serde_saphyr::Error, pipeline: Option<String>) -> Box<Failure> {
    let location = error.location().unwrap_or(Location::UNKNOWN);
    let mut message = error.without_snippet().to_string();
    if location != Location::UNKNOWN {
        let suffix = format!(" at line {}, column {}", location.line(), location.column());
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_string();
        }
    }
    let mut message = plain_message(message.trim().to_string());
    if let Some(near) = closest_expected(&message) {
        message = format!("{message}; did you mean `{near}`?");
    }
    let hint = hint_for(&message);
    Box::new(Failure {
        problem: located(location, message, hint, pipeline),
        parse_error: Some(error),
    })
}

/// For serde's "unknown field `x`, expected one of a, b" (or "unknown variant"):
/// the expected name closest to `x`, when one is close enough to be a typo of it.
fn closest_expected(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (unknown, rest) = rest.split_once('`')?;
    let expected = rest.strip_prefix(", expected ")?;
    let expected = expected.strip_prefix("one of ").unwrap_or(expected);
    let unknown = unknown.to_lowercase();
    expected
        .split(", ")
        .flat_map(|part| part.split(" or "))
        .map(|name| name.trim().trim_matches('`'))
        .filter(|name| !name.is_empty())
        .map(|name| (strsim::jaro_winkler(&unknown, &name.to_lowercase()), name))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name)
}

fn hint_for(message: &str) -> String {
    // First match wins; the messages come from serde and the YAML parser.
    const HINTS: [(&str, &str); 10] = [
        (
            "unknown field",
            "remove the field or fix its spelling; `reconciler schema` lists every field",
        ),
        (
            "missing field",
            "add the field; `reconciler schema` describes it",
        ),
        ("duplicate", "remove one of the two keys"),
        (
            "too large",
            "write the document out plainly, without deep nesting or repeated aliases",
        ),
        ("unknown variant", "use one of the values listed"),
        (
            "must be a whole number",
            "write a whole number in that range, without quotes, e.g. `3`",
        ),
        ("invalid u", "write a whole number, e.g. `3`"),
        (
            "invalid",
            "check the value's type against `reconciler schema`",
        ),
        (
            "indicator",
            "check the YAML syntax here: indentation, brackets, quotes",
        ),
        (
            "expected",
            "check the YAML syntax here: indentation, brackets, quotes",
        ),
    ];
    HINTS
        .iter()
        .find(|(needle, _)| message.contains(needle))
        .map_or(
            "README.md's spec reference describes every field; `reconciler schema` prints the JSON Schema",
            |(_, hint)| hint,
        )
        .to_string()
}

/// Rewrites parser messages that speak of the library's internals.
fn plain_message(message: String) -> String {
    if message.starts_with("budget breached") {
        return "the document is too large or expands too many aliases (parser budget exceeded)"
            .to_string();
    }
    match message.split_once(", set DuplicateKeyPolicy") {
        Some((head, _)) => head.to_string(),
        None => message,
    }
}

fn reject_duplicate_names(pipelines: &mut Vec<LoadedResource>, problems: &mut Vec<SpecProblem>) {
    let mut first_seen: BTreeMap<String, (PathBuf, u64, &'static str)> = BTreeMap::new();
    let mut duplicated = std::collections::BTreeSet::new();
    for loaded in pipelines.iter() {
        let name = loaded.resource.name().to_string();
        match first_seen.get(&name) {
            Some((file, line, first_noun)) => {
                problems.push(SpecProblem {
                    file: loaded.file.clone(),
                    line: loaded.line,
                    column: 1,
                    message: format!(
                        "{} `{name}` has the name of the {first_noun} defined at {}:{line}",
                        loaded.resource.noun(),
                        file.display()
                    ),
                    hint: Some(
                        "give each pipeline and restore target a unique metadata.name; both are ignored until then"
                            .into(),
                    ),
                    pipeline: Some(name.clone()),
                    snippet: None,
                });
                duplicated.insert(name);
            }
            None => {
                first_seen.insert(
                    name,
                    (loaded.file.clone(), loaded.line, loaded.resource.noun()),
                );
            }
        }
    }
    pipelines.retain(|p| !duplicated.contains(p.resource.name().as_str()));
}

/// Where a volume is, to compare with others. Docker volumes are compared by name:
/// a relative path never overlaps the absolute ones of directories.
fn volume_path(location: VolumeLocation<'_>) -> Option<PathBuf> {
    match location {
        VolumeLocation::Directory(path) => Some(path.as_path().to_path_buf()),
        VolumeLocation::Docker(name) => Some(Path::new("docker-volume").join(name.as_str())),
        VolumeLocation::Unset => None,
    }
}

/// What a document writes to: a pipeline's volume and starport target, a restore
/// target's volume.
fn written_paths(loaded: &LoadedResource) -> Vec<(&'static str, PathBuf)> {
    let spec = match &loaded.resource {
        Resource::BackupPipeline(pipeline) => &pipeline.spec,
        Resource::RestoreTarget(target) => {
            let what = match target.spec.volume.location() {
                VolumeLocation::Docker(_) => "volume.dockerVolume",
                _ => "volume.path",
            };
            return volume_path(target.spec.volume.location())
                .map(|p| (what, p))
                .into_iter()
                .collect();
        }
    };
    let what = match spec.recovered_volume.location() {
        VolumeLocation::Docker(_) => "recoveredVolume.dockerVolume",
        _ => "recoveredVolume.path",
    };
    let mut paths: Vec<_> = volume_path(spec.recovered_volume.location())
        .map(|p| (what, p))
        .into_iter()
        .collect();
    if let Some(starport) = &spec.starport {
        paths.push((
            "starport target",
            starport.root.as_path().join(starport.target.as_str()),
        ));
    }
    paths
}

/// Rejects pipelines whose written paths overlap: a volume inside its own starport
/// (or the reverse) would be wiped or copied into itself, and two pipelines sharing a
/// volume or a starport target would undo each other's work.
fn reject_overlapping_paths(pipelines: &mut Vec<LoadedResource>, problems: &mut Vec<SpecProblem>) {
    let mut rejected = std::collections::BTreeSet::new();
    let overlap = |a: &Path, b: &Path| a.starts_with(b) || b.starts_with(a);
    for (i, a) in pipelines.iter().enumerate() {
        let name = a.resource.name().to_string();
        let own = written_paths(a);
        if let [(_, volume), (_, starport)] = own.as_slice()
            && overlap(volume, starport)
        {
            problems.push(SpecProblem {
                file: a.file.clone(),
                line: a.line,
                column: 1,
                message: format!(
                    "pipeline `{name}`: recoveredVolume.path {} and the starport target {} overlap",
                    volume.display(),
                    starport.display()
                ),
                hint: Some("keep the volume and the starport in separate directories".into()),
                pipeline: Some(name.clone()),
                snippet: None,
            });
            rejected.insert(name.clone());
        }
        for b in pipelines.iter().skip(i + 1) {
            for (what_a, path_a) in &own {
                for (what_b, path_b) in written_paths(b) {
                    if overlap(path_a, &path_b) {
                        let other = b.resource.name().to_string();
                        problems.push(SpecProblem {
                            file: b.file.clone(),
                            line: b.line,
                            column: 1,
                            message: format!(
                                "{} `{other}` writes its {what_b} {} where {} `{name}` ({}:{}) writes its {what_a}",
                                b.resource.noun(),
                                path_b.display(),
                                a.resource.noun(),
                                a.file.display(),
                                a.line
                            ),
                            hint: Some("give each pipeline its own volume and starport target; both are ignored until then".into()),
                            pipeline: Some(other.clone()),
                            snippet: None,
                        });
                        rejected.insert(name.clone());
                        rejected.insert(other);
                    }
                }
            }
        }
    }
    pipelines.retain(|p| !rejected.contains(p.resource.name().as_str()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_line_numbers_and_columns() {
        let docs = split_documents("a: 1\n---\nb: 2\n--- {c: 3}\n...\n# only a comment\n");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].first_line, 1);
        assert_eq!(docs[1].first_line, 2);
        assert_eq!(docs[2].first_line, 4);
        assert_eq!(docs[2].text, "    {c: 3}\n");
    }

    #[test]
    fn markers_need_whitespace_after_them() {
        assert_eq!(split_documents("a: ---x\n----\n").len(), 1);
    }
}
