//! TDX quote generation inside a TD guest through Linux configfs-tsm.
//!
//! The kernel interface (Documentation/ABI/testing/configfs-tsm-report): creating a directory
//! under `/sys/kernel/config/tsm/report` makes a report entry with attribute files; writing 64
//! bytes to `inblob` sets the report data, reading `outblob` returns the quote, `provider`
//! names the backend (`tdx_guest`), and `generation` counts writes to the entry so a reader can
//! tell whether someone else wrote `inblob` between its write and its read.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{AttestationKind, Attester, Quote, ReportData, TeeError};

/// Where configfs-tsm report entries live on Linux.
pub const DEFAULT_TSM_REPORT_ROOT: &str = "/sys/kernel/config/tsm/report";

/// The `provider` value of the TDX guest driver.
const TDX_PROVIDER: &str = "tdx_guest";

/// How often a quote is attempted when a concurrent writer disturbs the entry.
const DEFAULT_ATTEMPTS: u32 = 3;

/// Distinguishes entries made by one process, so concurrent quotes never share an entry.
static ENTRY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// File operations on the configfs tree. On configfs the kernel creates the attribute files
/// when a directory is made and drops them with it; tests substitute a temporary directory
/// that imitates those side effects.
trait TsmFs: Send + Sync {
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
}

/// The real configfs.
struct ConfigFs;

impl TsmFs for ConfigFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        fs::write(path, bytes)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }
}

/// Produces real TDX quotes inside an Intel TDX guest via configfs-tsm.
pub struct TdxAttester {
    root: PathBuf,
    attempts: u32,
    fs: Box<dyn TsmFs>,
}

impl std::fmt::Debug for TdxAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdxAttester")
            .field("root", &self.root)
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl TdxAttester {
    /// Opens the configfs-tsm report directory at `root` (normally
    /// [`DEFAULT_TSM_REPORT_ROOT`]). Fails outside a TD guest, where it does not exist.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, TeeError> {
        Self::open_with(root.into(), Box::new(ConfigFs))
    }

    /// Opens [`DEFAULT_TSM_REPORT_ROOT`].
    pub fn open_default() -> Result<Self, TeeError> {
        Self::open(DEFAULT_TSM_REPORT_ROOT)
    }

    fn open_with(root: PathBuf, fs: Box<dyn TsmFs>) -> Result<Self, TeeError> {
        if !root.is_dir() {
            return Err(generation_error(format!(
                "configfs-tsm not found at {}: not inside an Intel TDX guest?",
                root.display()
            )));
        }
        Ok(Self {
            root,
            attempts: DEFAULT_ATTEMPTS,
            fs,
        })
    }

    /// Sets how many times a quote is attempted when a concurrent writer changes the entry
    /// (at least once).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The configfs-tsm report directory in use.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Returns the raw TDX quote binding `report_data`.
    pub fn quote_bytes(&self, report_data: &ReportData) -> Result<Vec<u8>, TeeError> {
        let mut last = None;
        for _ in 0..self.attempts {
            match self.quote_once(report_data)? {
                Attempt::Quote(bytes) => return Ok(bytes),
                Attempt::Raced(reason) => last = Some(reason),
            }
        }
        Err(generation_error(format!(
            "gave up after {} attempts: {}",
            self.attempts,
            last.unwrap_or_default()
        )))
    }

    fn quote_once(&self, report_data: &ReportData) -> Result<Attempt, TeeError> {
        let name = format!(
            "cocoon-{}-{}",
            std::process::id(),
            ENTRY_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let entry = self.root.join(name);
        self.fs.create_dir(&entry).map_err(|e| {
            generation_error(format!(
                "cannot create report entry {}: {e}",
                entry.display()
            ))
        })?;
        let result = self.fill_entry(&entry, report_data);
        // Entries hold kernel memory; remove it whatever happened. A failure here must not
        // hide the quote's own error, and a quote obtained is still valid.
        let removed = self.fs.remove_dir(&entry);
        match (result, removed) {
            (Ok(attempt), Ok(())) => Ok(attempt),
            (Ok(_), Err(e)) => Err(generation_error(format!(
                "cannot remove report entry {}: {e}",
                entry.display()
            ))),
            (Err(e), _) => Err(e),
        }
    }

    fn fill_entry(&self, entry: &Path, report_data: &ReportData) -> Result<Attempt, TeeError> {
        let provider = self.read_text(&entry.join("provider"))?;
        if provider != TDX_PROVIDER {
            return Err(generation_error(format!(
                "configfs-tsm provider is {provider:?}, expected {TDX_PROVIDER:?}: not an Intel TDX guest?"
            )));
        }
        let before = self.read_generation(entry)?;
        self.fs
            .write(&entry.join("inblob"), report_data)
            .map_err(|e| generation_error(format!("cannot write inblob: {e}")))?;
        let quote = self
            .fs
            .read(&entry.join("outblob"))
            .map_err(|e| generation_error(format!("cannot read outblob: {e}")))?;
        let after = self.read_generation(entry)?;
        // Our own write is the only one allowed between the two reads; anything else means
        // the outblob may answer someone else's report data.
        if before.checked_add(1) != Some(after) {
            return Ok(Attempt::Raced(format!(
                "generation went from {before} to {after}: a concurrent writer used the entry"
            )));
        }
        if quote.is_empty() {
            return Err(generation_error(
                "configfs-tsm returned an empty quote".into(),
            ));
        }
        Ok(Attempt::Quote(quote))
    }

    fn read_text(&self, path: &Path) -> Result<String, TeeError> {
        let bytes = self
            .fs
            .read(path)
            .map_err(|e| generation_error(format!("cannot read {}: {e}", path.display())))?;
        Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
    }

    fn read_generation(&self, entry: &Path) -> Result<u64, TeeError> {
        let text = self.read_text(&entry.join("generation"))?;
        text.parse()
            .map_err(|_| generation_error(format!("generation is not a number: {text:?}")))
    }
}

impl Attester for TdxAttester {
    fn kind(&self) -> AttestationKind {
        AttestationKind::Tdx
    }

    fn quote(&self, report_data: &ReportData) -> Result<Quote, TeeError> {
        Ok(Quote {
            kind: AttestationKind::Tdx,
            bytes: self.quote_bytes(report_data)?,
        })
    }
}

enum Attempt {
    Quote(Vec<u8>),
    Raced(String),
}

fn generation_error(reason: String) -> TeeError {
    TeeError::QuoteGeneration {
        kind: AttestationKind::Tdx,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    /// A temporary directory that imitates configfs-tsm: making an entry creates `provider`
    /// and `generation`; writing `inblob` bumps `generation` and produces `outblob`.
    struct SimulatedTsm {
        provider: &'static str,
        /// Extra generation bumps per `inblob` write (a concurrent writer), for this many
        /// writes.
        racing_writes: Arc<AtomicU32>,
    }

    impl TsmFs for SimulatedTsm {
        fn create_dir(&self, path: &Path) -> io::Result<()> {
            fs::create_dir(path)?;
            fs::write(path.join("provider"), format!("{}\n", self.provider))?;
            fs::write(path.join("generation"), "0\n")
        }
        fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
            fs::write(path, bytes)?;
            let entry = path.parent().expect("entry");
            if path.file_name() == Some("inblob".as_ref()) {
                let generation: u64 = fs::read_to_string(entry.join("generation"))?
                    .trim()
                    .parse()
                    .expect("number");
                let raced = self
                    .racing_writes
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let bump = if raced { 2 } else { 1 };
                fs::write(entry.join("generation"), format!("{}\n", generation + bump))?;
                let mut quote = b"TDXQUOTE".to_vec();
                quote.extend_from_slice(bytes);
                fs::write(entry.join("outblob"), quote)?;
            }
            Ok(())
        }
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            fs::read(path)
        }
        fn remove_dir(&self, path: &Path) -> io::Result<()> {
            fs::remove_dir_all(path)
        }
    }

    fn attester(root: &Path, provider: &'static str, racing: u32) -> TdxAttester {
        TdxAttester::open_with(
            root.to_path_buf(),
            Box::new(SimulatedTsm {
                provider,
                racing_writes: Arc::new(AtomicU32::new(racing)),
            }),
        )
        .unwrap()
    }

    fn entries(root: &Path) -> usize {
        fs::read_dir(root).unwrap().count()
    }

    #[test]
    fn quote_binds_report_data_and_removes_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let a = attester(dir.path(), "tdx_guest", 0);
        let rd = [7u8; 64];
        let q = a.quote(&rd).unwrap();
        assert_eq!(q.kind, AttestationKind::Tdx);
        assert_eq!(&q.bytes[..8], b"TDXQUOTE");
        assert_eq!(&q.bytes[8..], &rd);
        assert_eq!(entries(dir.path()), 0);
    }

    #[test]
    fn concurrent_writer_is_retried_then_reported() {
        let dir = tempfile::tempdir().unwrap();
        // One disturbed attempt, then a clean one.
        let a = attester(dir.path(), "tdx_guest", 1);
        assert!(a.quote(&[1; 64]).is_ok());
        assert_eq!(entries(dir.path()), 0);

        let a = attester(dir.path(), "tdx_guest", 10).with_attempts(2);
        let err = a.quote(&[1; 64]).unwrap_err().to_string();
        assert!(err.contains("concurrent writer"), "{err}");
        assert!(err.contains("2 attempts"), "{err}");
        assert_eq!(entries(dir.path()), 0);
    }

    #[test]
    fn wrong_provider_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let a = attester(dir.path(), "sev_guest", 0);
        let err = a.quote(&[1; 64]).unwrap_err().to_string();
        assert!(err.contains("sev_guest"), "{err}");
        assert_eq!(entries(dir.path()), 0);
    }

    #[test]
    fn open_outside_a_td_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-tsm");
        let err = TdxAttester::open(&missing).unwrap_err().to_string();
        assert!(err.contains("configfs-tsm not found at"), "{err}");
        assert!(err.contains("not inside an Intel TDX guest?"), "{err}");
    }

    #[test]
    fn real_configfs_on_a_plain_directory_fails_without_panicking() {
        // A plain directory has no kernel behind it: no provider file appears.
        let dir = tempfile::tempdir().unwrap();
        let a = TdxAttester::open(dir.path()).unwrap();
        let err = a.quote(&[0; 64]).unwrap_err().to_string();
        assert!(err.contains("provider"), "{err}");
        assert_eq!(entries(dir.path()), 0);
    }
}
