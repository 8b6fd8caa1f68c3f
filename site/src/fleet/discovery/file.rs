//! `--nodes-file PATH`: the non-DNS way to change the nodes without a restart. One
//! `NAME=HOST:PORT` per line (the syntax of `--node`), `#` starts a comment. The file is
//! read again every discovery round and on SIGHUP; a file that cannot be read, parsed or
//! resolved keeps the last good list, so a half-written edit never empties the fleet.

use std::path::{Path, PathBuf};

use glimpse_transport::NodeEndpoint;

use crate::fleet::config::NodeAddress;

/// Parses a nodes file: its nodes, or the first bad line with its number.
pub fn parse(text: &str) -> Result<Vec<NodeAddress>, String> {
    let mut nodes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let node = line
            .parse::<NodeAddress>()
            .map_err(|e| format!("line {}: {e}", i + 1))?;
        nodes.push(node);
    }
    Ok(nodes)
}

/// Resolves `NAME=HOST:PORT` to an endpoint (the first address `HOST` has, as `--node`).
pub async fn resolve(node: &NodeAddress) -> Result<NodeEndpoint, String> {
    let addr = tokio::net::lookup_host(node.target.as_str())
        .await
        .map_err(|e| format!("resolving {}: {e}", node.target))?
        .next()
        .ok_or_else(|| format!("resolving {}: no address", node.target))?;
    Ok(NodeEndpoint {
        name: node.name.clone(),
        addr,
    })
}

/// The nodes file and what was last read from it.
#[derive(Debug)]
pub struct NodesFile {
    path: PathBuf,
    /// The text of the last good read: an unchanged file is not resolved again.
    last_text: Option<String>,
}

/// What reading the file gave.
#[derive(Debug, PartialEq, Eq)]
pub enum FileRead {
    /// Same text as the last good read.
    Unchanged,
    /// A new good list.
    Nodes(Vec<NodeEndpoint>),
    /// Unreadable, a bad line, or a host that does not resolve: the last good list stands.
    Bad(String),
}

impl NodesFile {
    /// Watches `path` (nothing read yet).
    pub fn new(path: PathBuf) -> NodesFile {
        NodesFile {
            path,
            last_text: None,
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file; `force` resolves it again even when its text did not change (SIGHUP:
    /// a host name in it may point elsewhere now).
    pub async fn read(&mut self, force: bool) -> FileRead {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(t) => t,
            Err(e) => return FileRead::Bad(format!("reading {}: {e}", self.path.display())),
        };
        if !force && self.last_text.as_deref() == Some(text.as_str()) {
            return FileRead::Unchanged;
        }
        let nodes = match parse(&text) {
            Ok(n) => n,
            Err(e) => return FileRead::Bad(format!("{}: {e}", self.path.display())),
        };
        let mut endpoints = Vec::with_capacity(nodes.len());
        for node in &nodes {
            match resolve(node).await {
                Ok(ep) => endpoints.push(ep),
                Err(e) => return FileRead::Bad(format!("{}: {e}", self.path.display())),
            }
        }
        self.last_text = Some(text);
        FileRead::Nodes(endpoints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_comments_and_errors() {
        let nodes = parse("# the fleet\n\na=10.0.0.1:4433  # rack 1\n  b = 10.0.0.2:4433\n")
            .expect("parses");
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].name, "b");
        assert_eq!(nodes[1].target, "10.0.0.2:4433");
        let err = parse("a=10.0.0.1:4433\nb=nohost\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert_eq!(parse("# empty\n").unwrap(), vec![]);
    }

    #[tokio::test]
    async fn a_bad_edit_keeps_the_last_good_list() {
        let dir = std::env::temp_dir().join(format!("glimpse-nodes-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nodes");
        std::fs::write(&path, "a=127.0.0.1:4433\n").unwrap();
        let mut f = NodesFile::new(path.clone());
        let FileRead::Nodes(n) = f.read(false).await else {
            panic!("first read")
        };
        assert_eq!(n[0].addr, "127.0.0.1:4433".parse().unwrap());
        assert_eq!(f.read(false).await, FileRead::Unchanged);
        assert!(matches!(f.read(true).await, FileRead::Nodes(_)));
        std::fs::write(&path, "a=127.0.0.1\n").unwrap();
        assert!(matches!(f.read(false).await, FileRead::Bad(e) if e.contains("line 1")));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(f.read(false).await, FileRead::Bad(_)));
        std::fs::write(&path, "a=127.0.0.1:4433\nb=127.0.0.2:4433\n").unwrap();
        assert!(matches!(f.read(false).await, FileRead::Nodes(n) if n.len() == 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
