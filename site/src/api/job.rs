//! One job as everyone sees it: its status, labels and errors ([`JobView`]), the value the
//! store keeps, the events carry and the API answers, so what the page shows and what the
//! API answers cannot drift apart.

use serde::Serialize;

use crate::fleet::inference::TopLabel;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted, waiting for a dispatch slot.
    Queued,
    /// Sent to a node (see `node` and `attempts`).
    Running,
    /// An attempt failed; another one is on its way.
    Retrying,
    /// Classified; `top` holds the labels.
    Ok,
    /// Failed for good; `error` and `code` say why.
    Error,
}

impl JobStatus {
    /// True once the job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Ok | JobStatus::Error)
    }
}

/// Everything the API and the page know about a job. This is also the element of the
/// `results` array of `POST /api/v1/classify?wait=true`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobView {
    /// The job's id, unguessable: the id of the front-end that owns it, a dot, and random hex.
    pub id: String,
    /// The uploaded file name (user supplied: the page shows it with `textContent`).
    pub name: String,
    /// Where the job is in its life.
    pub status: JobStatus,
    /// Top labels, best first; empty until the job is done.
    pub top: Vec<TopLabel>,
    /// The node that answered (or that is working on it).
    pub node: Option<String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Time from upload to answer as the client experiences it (site queue included).
    pub latency_ms: Option<f64>,
    /// Time the dispatcher measured from first send to answer.
    pub node_latency_ms: Option<f64>,
    /// Size of the uploaded file in bytes.
    pub bytes: usize,
    /// Why the job failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// HTTP status that describes the failure (415, 422, 503, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Set when the labels are not trained GoogLeNet's (random weights, synthetic model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Latest progress note ("retry 2: node-1 reset the stream", "hedged to node-2").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl JobView {
    /// A freshly queued job.
    pub fn queued(id: String, name: String, bytes: usize) -> JobView {
        JobView {
            id,
            name,
            status: JobStatus::Queued,
            top: Vec::new(),
            node: None,
            attempts: 0,
            latency_ms: None,
            node_latency_ms: None,
            bytes,
            error: None,
            code: None,
            warning: None,
            note: None,
        }
    }
}

/// Longest file name kept, in bytes (a common file-system limit); longer names are cut
/// visibly with "…".
pub const MAX_NAME_BYTES: usize = 255;

/// A file name as the site keeps and shows it: at most [`MAX_NAME_BYTES`], control
/// characters replaced, never empty.
pub fn display_name(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    let cut = crate::http::error::truncate(cleaned, MAX_NAME_BYTES);
    if cut.trim().is_empty() {
        "upload".to_string()
    } else {
        cut
    }
}

impl JobView {
    /// Approximate heap and inline bytes this view takes, which the store's byte budget
    /// and the event queues count.
    pub fn approx_bytes(&self) -> usize {
        let strings = [&self.error, &self.warning, &self.note, &self.node]
            .iter()
            .map(|s| s.as_ref().map_or(0, String::len))
            .sum::<usize>();
        std::mem::size_of::<JobView>()
            + self.id.len()
            + self.name.len()
            + strings
            + self
                .top
                .iter()
                .map(|t| std::mem::size_of::<TopLabel>() + t.label.len())
                .sum::<usize>()
    }
}
