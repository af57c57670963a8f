//! The bearer token Derm presents to the upstream adapter, read from a file and re-read when
//! it changes: projected ServiceAccount tokens rotate (kubelet swaps the file about hourly).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Re-read the file at least this often even if its metadata looks unchanged (client-go's
/// cached token source does the same every minute).
const MAX_AGE: Duration = Duration::from_secs(60);

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

#[derive(Debug)]
struct Cached {
    stamp: Stamp,
    read_at: Instant,
    token: String,
}

/// A token file; `None` path means no token is sent.
#[derive(Debug)]
pub struct TokenFile {
    path: Option<PathBuf>,
    cached: Mutex<Option<Cached>>,
}

impl TokenFile {
    /// Reads tokens from `path` (or sends none).
    pub fn new(path: Option<PathBuf>) -> Self {
        Self { path, cached: Mutex::new(None) }
    }

    /// The file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The current token. A file that cannot be read keeps the last token read (logged);
    /// with none read yet, no token is sent and the upstream answers 401 on its own.
    pub async fn get(&self) -> Option<String> {
        let path = self.path.as_deref()?;
        let stamp = match tokio::fs::metadata(path).await {
            Ok(m) => Stamp { modified: m.modified().ok(), len: m.len() },
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot stat the upstream token file");
                return self.last();
            }
        };
        if let Some(token) = self.unchanged(&stamp) {
            return Some(token);
        }
        match tokio::fs::read_to_string(path).await {
            Ok(text) => {
                let token = text.trim().to_owned();
                if token.is_empty() {
                    tracing::warn!(path = %path.display(), "the upstream token file is empty");
                    return self.last();
                }
                tracing::debug!(path = %path.display(), "upstream token (re)read");
                *self.lock() = Some(Cached { stamp, read_at: Instant::now(), token: token.clone() });
                Some(token)
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read the upstream token file");
                self.last()
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        // A poisoned lock only means a panic elsewhere mid-assignment of a plain value.
        self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn unchanged(&self, stamp: &Stamp) -> Option<String> {
        let cached = self.lock();
        let c = cached.as_ref()?;
        (c.stamp == *stamp && c.read_at.elapsed() < MAX_AGE).then(|| c.token.clone())
    }

    fn last(&self) -> Option<String> {
        self.lock().as_ref().map(|c| c.token.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rotation_is_picked_up_and_a_vanished_file_keeps_the_last_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let file = TokenFile::new(Some(path.clone()));
        assert_eq!(file.get().await, None, "no file yet");
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(file.get().await.as_deref(), Some("first"));
        // A different length changes the stamp even where mtime has coarse resolution.
        std::fs::write(&path, "second-token").unwrap();
        assert_eq!(file.get().await.as_deref(), Some("second-token"));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.get().await.as_deref(), Some("second-token"));
        assert_eq!(TokenFile::new(None).get().await, None);
    }
}
