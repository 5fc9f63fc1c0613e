//! The wire types of files and sync (capabilities `files` and `sync`): the requests, their
//! answers, the manifest entries both sides build, and the frames of a bulk transfer.
//!
//! A request that carries bytes ([`super::Request::has_payload`]) is followed on the same stream
//! by them, right after its line: `file_write` by `size` raw bytes, `sync_diff` by `entries`
//! manifest lines, `sync_apply` by a frame stream, `sync_send` by `paths` JSON string lines.
//! `sync_send` answers with a frame stream, then its final line. A frame stream is a sequence of
//! [`Frame`] lines; a `file` frame's line is followed by `size` raw bytes and one status byte
//! ([`FRAME_OK`] or [`FRAME_CHANGED`]: the sender saw the file change while it read it, and the
//! receiver drops what it got). It ends with `{"frame":"end"}`.

use serde::{Deserialize, Serialize};

/// The status byte after a file's bytes: they are the file as it was.
pub const FRAME_OK: u8 = 0;
/// The status byte after a file's bytes: the file changed while it was read; drop them.
pub const FRAME_CHANGED: u8 = 1;

/// File modes cross the wire as octal text (`"0644"`), read back from text or a number.
pub mod octal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{mode:04o}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Mode {
            Text(String),
            Number(u32),
        }
        match Mode::deserialize(d)? {
            Mode::Number(n) => Ok(n),
            // Out of range is the handler's `invalid_argument`, not a bad request line.
            Mode::Text(t) => u32::from_str_radix(t.trim().trim_start_matches("0o"), 8)
                .map_err(|_| serde::de::Error::custom(format!("mode {t:?} is not octal"))),
        }
    }

    /// `"0644"`, `"644"` or `"0o644"` as a mode (at most `07777`).
    pub fn parse(text: &str) -> Result<u32, String> {
        let digits = text.trim().trim_start_matches("0o");
        match u32::from_str_radix(digits, 8) {
            Ok(n) if n <= 0o7777 => Ok(n),
            _ => Err(format!("mode {text:?} is not an octal mode like 0644")),
        }
    }

    /// The same for an optional mode.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(mode: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
            match mode {
                Some(m) => super::serialize(m, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] u32);
            Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(m)| m))
        }
    }
}

/// `file_write`: the file at `path` becomes the `size` bytes that follow the request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileWriteRequest {
    /// `~` and relative paths are from the remote home.
    pub path: String,
    pub size: u64,
    /// Default: the mode of the file it replaces, else 0644.
    #[serde(default, with = "octal::option", skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Create missing parent directories.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mkdir: bool,
    /// Write to the target of a symlink at `path` instead of refusing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_symlinks: bool,
    /// Keep setuid, setgid and sticky bits of `mode` (cleared by default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_special_bits: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileReadRequest {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// At most this many bytes (default and cap: [`MAX_READ_CHUNK`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// The most bytes one `file_data` answer carries (its base64 fits an answer line).
pub const MAX_READ_CHUNK: u64 = 8 * 1024 * 1024;

/// `file_stat` and `file_ls`: the path to look at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathRequest {
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileWritten {
    /// The absolute path written.
    pub path: String,
    pub size: u64,
    #[serde(with = "octal")]
    pub mode: u32,
}

/// A page of a file (`file_read`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileData {
    pub path: String,
    pub offset: u64,
    /// The file's size when it was read.
    pub size: u64,
    pub data_b64: String,
    /// Where the next page starts.
    pub next_offset: u64,
    /// `next_offset` is the end of the file.
    pub eof: bool,
}

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// A socket, fifo or device: never read, written or synced.
    Other,
}

/// `file_stat`, and one entry of `file_ls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileStat {
    /// The path asked for (absolute) in `file_stat`; the entry's name in `file_ls`.
    pub path: String,
    pub exists: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FileKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, with = "octal::option", skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<String>,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileList {
    pub path: String,
    pub entries: Vec<FileStat>,
}

/// Which way a sync goes: `push` (laptop to machine) or `pull`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Push,
    Pull,
}

/// Which files of a tree take part: `.gitignore` rules (unless `no_gitignore`), never `.git/`
/// (unless `include_git`), never what an `exclude` glob matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_git: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_gitignore: bool,
    /// A single-file sync: only this name directly under the root takes part, named by the
    /// user, so no ignore rule applies to it. (A codexd before it walks the whole root; the
    /// client keeps only this name of its answer.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<String>,
}

/// One path of a tree in a manifest, relative to the tree's root (`/`-separated, no `..`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub kind: FileKind,
    #[serde(default)]
    pub size: u64,
    #[serde(with = "octal")]
    pub mode: u32,
    /// Nanoseconds since the Unix epoch.
    #[serde(default)]
    pub mtime_ns: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// BLAKE3 of the content (hex), where size and mtime alone cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// A path left out, and why (not UTF-8, a socket, unreadable, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// `sync_diff`: the source manifest is one side's, the destination's the other's. The client
/// sends its own manifest (`entries` lines after the request line); codexd walks `root`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncDiffRequest {
    pub root: String,
    pub direction: Direction,
    #[serde(flatten)]
    pub filter: TreeFilter,
    /// Whether destination paths missing from the source are listed for deletion.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
    /// How many manifest lines follow the request line.
    pub entries: u64,
}

/// What the destination lacks: `send` (source entries), `check` (same size, other mtime: the
/// source entry with codexd's hash of its own side, for the client to compare), `meta` (only
/// the mode differs), `delete` (destination paths, deepest first).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncDiff {
    pub send: Vec<Entry>,
    pub check: Vec<Entry>,
    pub meta: Vec<Entry>,
    pub delete: Vec<String>,
    pub unchanged: u64,
    /// Paths codexd's walk left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
    /// For a pull (codexd's tree is the source): how many paths its walk left out by `.git/`
    /// and `.gitignore` rules (an ignored directory counts once), and the first few of them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ignored: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_sample: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `sync_apply`: a frame stream for the tree at `root` follows the request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncApplyRequest {
    pub root: String,
    /// Keep setuid, setgid and sticky bits of the frames' modes (cleared by default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_special_bits: bool,
}

/// `sync_send`: `paths` JSON string lines follow; the answer is their frames, then `sync_sent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncSendRequest {
    pub root: String,
    pub paths: u64,
}

/// What one side did with a frame stream (`sync_applied`), or sent as one (`sync_sent`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransferStats {
    pub files: u64,
    pub bytes: u64,
    #[serde(default)]
    pub links: u64,
    #[serde(default)]
    pub dirs: u64,
    #[serde(default)]
    pub meta: u64,
    #[serde(default)]
    pub deleted: u64,
    /// Files that changed while they were read: left as they were on the receiving side.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
}

/// One frame of a bulk transfer, tagged by `frame`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "frame", rename_all = "snake_case")]
pub enum Frame {
    /// Followed by `size` bytes and a status byte.
    File {
        path: String,
        size: u64,
        #[serde(with = "octal")]
        mode: u32,
        mtime_ns: i64,
    },
    Symlink {
        path: String,
        target: String,
    },
    Dir {
        path: String,
        #[serde(with = "octal")]
        mode: u32,
    },
    /// Same content: set the mode and mtime only.
    Meta {
        path: String,
        #[serde(with = "octal")]
        mode: u32,
        mtime_ns: i64,
    },
    Delete {
        path: String,
    },
    End,
}

/// The body of the original tool's `POST /v1/sync/download`: the tree at `path` as a
/// gzip'ed tar, without what an `excludes` glob matches (a glob without `/` matches a name at
/// any depth, as the original's `filepath.Match` on base names; one with `/` a relative path).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDownloadRequest {
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
}

/// The answer of the original tool's `POST /v1/sync/upload` (its `ok`, `dst`, `files_written`,
/// `bytes_written`), with the directories and symlinks made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncUploaded {
    pub ok: bool,
    /// The absolute directory written into.
    pub dst: String,
    pub files_written: u64,
    pub bytes_written: u64,
    #[serde(default)]
    pub dirs: u64,
    #[serde(default)]
    pub links: u64,
}
