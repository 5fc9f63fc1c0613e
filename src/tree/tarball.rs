//! Trees as (gzip'ed) tar streams, the format of the original tool's `/v1/sync/upload` and
//! `/v1/sync/download`: [`extract`] writes one into a tree through [`Applier`] (each file
//! atomically, nothing written through a symlink, an entry that would land outside the root
//! refused), [`pack`] writes a walked tree as one (symlinks as links, never followed).

use std::cell::Cell;
use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use tar::EntryType;

use super::apply::Applier;
use super::manifest::Manifest;
use super::{real_parents, rel_path, shown};
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{FileKind, Frame, TransferStats};

/// The first two bytes of a gzip stream; anything else is read as a plain tar.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The longest entry name or link target taken (Linux's `PATH_MAX`), GNU long names and PAX
/// paths included: a longer one is refused before it is read.
pub const MAX_NAME: u64 = 4096;

/// The largest PAX extended header read (its keys besides `path` and `linkpath` are ignored).
const MAX_PAX_HEADER: u64 = 64 * 1024;

/// What one extraction may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest file, in bytes.
    pub max_file_size: u64,
    /// The most bytes the whole tar may hold (headers and files, after gzip).
    pub max_total: u64,
}

/// Extracts the tar stream `body` (gzip'ed or not) into the existing directory `root`.
///
/// Directories, regular files and symlinks are written; an entry that climbs out (`..`, an
/// absolute name, a parent that is a symlink), a hard link, a device or a fifo, a name over
/// [`MAX_NAME`], a file over `max_file_size` or a tar over `max_total` stops the extraction
/// with an error (what came before it stays written). Modes keep the rwx bits only (no setuid,
/// setgid or sticky); a directory is always writable by its owner.
pub fn extract(body: &mut dyn BufRead, root: &Path, limits: Limits) -> Result<TransferStats> {
    let gzip = body.fill_buf().map_err(|e| Error::io("reading the upload", e))?;
    let reader: Box<dyn Read + '_> = match gzip.starts_with(&GZIP_MAGIC) {
        true => Box::new(MultiGzDecoder::new(body)),
        false => Box::new(body),
    };
    let over = Cell::new(false);
    let counted = Counted { inner: reader, left: limits.max_total, over: &over };
    let mut archive = tar::Archive::new(counted);
    let mut applier = Applier::new(root)?;
    let done = extract_entries(&mut archive, &mut applier, limits.max_file_size);
    match done {
        Err(_) if over.get() => Err(Error::new(
            ErrorCode::RequestTooLarge,
            format!(
                "the upload holds over {} bytes once un-gzipped, max_upload_bytes",
                limits.max_total
            ),
        )
        .with_hint("raise max_upload_bytes in ~/.codexd/config.yaml, or use sync push")),
        Err(e) => Err(e),
        Ok(()) => Ok(applier.stats),
    }
}

/// The entries of `archive` one by one, raw: GNU long names and PAX headers are read here,
/// each held to its cap before a byte of it is buffered (the tar crate would read them whole).
fn extract_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    applier: &mut Applier,
    max_file_size: u64,
) -> Result<()> {
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    for entry in archive.entries().map_err(bad_archive)?.raw(true) {
        let mut entry = entry.map_err(bad_archive)?;
        let kind = entry.header().entry_type();
        match kind {
            EntryType::GNULongName | EntryType::GNULongLink | EntryType::XHeader => {
                let cap = if kind == EntryType::XHeader { MAX_PAX_HEADER } else { MAX_NAME + 1 };
                if entry.size() > cap {
                    return Err(Error::invalid(format!(
                        "a {} of {} bytes: names are at most {MAX_NAME} bytes",
                        if kind == EntryType::XHeader { "PAX header" } else { "GNU long name" },
                        entry.size()
                    )));
                }
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut bytes).map_err(bad_archive)?;
                if kind == EntryType::XHeader {
                    for ext in tar::PaxExtensions::new(&bytes) {
                        let ext = ext.map_err(bad_archive)?;
                        match ext.key_bytes() {
                            b"path" => long_name = Some(ext.value_bytes().to_vec()),
                            b"linkpath" => long_link = Some(ext.value_bytes().to_vec()),
                            _ => {}
                        }
                    }
                } else {
                    let nul = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
                    bytes.truncate(nul);
                    match kind {
                        EntryType::GNULongName => long_name = Some(bytes),
                        _ => long_link = Some(bytes),
                    }
                }
                continue;
            }
            // Its bytes are skipped unread by the next step of the iterator.
            EntryType::XGlobalHeader => continue,
            _ => {}
        }
        let name = long_name.take().unwrap_or_else(|| entry.header().path_bytes().into_owned());
        let link = long_link.take();
        let Some(path) = entry_path(&name)? else { continue };
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o777;
        let mtime = header.mtime().ok().map(|s| UNIX_EPOCH + Duration::from_secs(s));
        let skipped = applier.stats.skipped.len();
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                if size > max_file_size {
                    return Err(too_large(&path, size, max_file_size));
                }
                applier
                    .write_file(&path, size, mode, mtime, &mut entry)
                    .map_err(|e| cut_inside(&path, e))?;
            }
            EntryType::Directory => {
                let dir = Frame::Dir { path: path.clone(), mode: mode | 0o700 };
                applier.apply(dir, &mut io::empty())?;
            }
            EntryType::Symlink => {
                let target = link
                    .or_else(|| entry.header().link_name_bytes().map(|c| c.into_owned()))
                    .unwrap_or_default();
                if target.len() as u64 > MAX_NAME {
                    let msg =
                        format!("entry {}: a link target over {MAX_NAME} bytes", shown(&path));
                    return Err(Error::invalid(msg));
                }
                let Ok(target) = String::from_utf8(target) else {
                    let msg = format!("entry {}: a link target not UTF-8", shown(&path));
                    return Err(Error::invalid(msg));
                };
                applier.apply(Frame::Symlink { path: path.clone(), target }, &mut io::empty())?;
            }
            other => {
                return Err(Error::invalid(format!(
                    "entry {} is {}: only directories, regular files and symlinks are \
                     extracted",
                    shown(&path),
                    kind_name(other)
                )));
            }
        }
        if let Some(s) = applier.stats.skipped.get(skipped) {
            let msg = format!("entry {} refused: {}", shown(&s.path), s.reason);
            return Err(Error::invalid(msg));
        }
    }
    Ok(())
}

/// The tar stream, failing once more than `left` bytes came (and saying so in `over`).
struct Counted<'a, R> {
    inner: R,
    left: u64,
    over: &'a Cell<bool>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => self.left = left,
            None => {
                self.over.set(true);
                return Err(io::Error::other("the upload is over max_upload_bytes"));
            }
        }
        Ok(n)
    }
}

/// An entry's name as a checked relative path, `None` for the root itself (`.`, `./`).
/// Leading `./` and a trailing `/` are what `tar -C dir .` writes; they are dropped.
fn entry_path(raw: &[u8]) -> Result<Option<String>> {
    if raw.len() as u64 > MAX_NAME {
        let head = String::from_utf8_lossy(&raw[..200]);
        let msg = format!("entry {} bytes long ({head:?}…): over {MAX_NAME} bytes", raw.len());
        return Err(Error::invalid(msg));
    }
    let Ok(name) = std::str::from_utf8(raw) else {
        let lossy = String::from_utf8_lossy(raw);
        return Err(Error::invalid(format!("entry {}: the name is not UTF-8", shown(&lossy))));
    };
    let mut rest = name.trim_end_matches('/');
    while let Some(r) = rest.strip_prefix("./") {
        rest = r.trim_start_matches('/');
    }
    let absolute = name.starts_with('/');
    if (rest.is_empty() || rest == ".") && !absolute {
        return Ok(None);
    }
    rel_path(if absolute { name } else { rest })?;
    Ok(Some(rest.to_string()))
}

fn bad_archive(e: io::Error) -> Error {
    Error::new(ErrorCode::BadRequest, format!("the body is not a readable tar stream: {e}"))
        .with_hint("send a gzip'ed tar (tar czf - -C DIR .) as the body")
}

/// A body that ended inside a file is the client's fault, not the server's.
fn cut_inside(path: &str, e: Error) -> Error {
    match e.code {
        ErrorCode::ProtocolError => {
            Error::new(ErrorCode::BadRequest, format!("entry {}: {}", shown(path), e.message))
        }
        _ => e,
    }
}

fn too_large(path: &str, size: u64, max: u64) -> Error {
    Error::new(
        ErrorCode::FileTooLarge,
        format!("entry {}: {size} bytes is over max_file_size ({max} bytes)", shown(path)),
    )
    .with_hint("raise max_file_size in ~/.codexd/config.yaml on the machine, or use sync push")
}

fn kind_name(kind: EntryType) -> &'static str {
    match kind {
        EntryType::Link => "a hard link",
        EntryType::Char => "a character device",
        EntryType::Block => "a block device",
        EntryType::Fifo => "a fifo",
        EntryType::GNUSparse => "a sparse file",
        _ => "of an unknown kind",
    }
}

/// Writes the entries of `manifest` (walked from `root`) to `out` as a gzip'ed tar, names
/// relative to `root`. A path that vanished or now sits under a symlink is left out.
///
/// On an error the stream is left cut (no tar end, no gzip trailer), so a reader sees it
/// incomplete rather than a shorter tree.
pub fn pack(root: &Path, manifest: &Manifest, out: &mut dyn Write) -> Result<TransferStats> {
    let cut = Cell::new(false);
    // Level 1: on loopback or a forward, speed matters more than a few percent of size.
    let gz = GzEncoder::new(Cuttable { out, cut: &cut }, Compression::fast());
    let mut tar = tar::Builder::new(gz);
    match append_all(&mut tar, root, manifest) {
        Ok(stats) => {
            let finished = tar.into_inner().and_then(|gz| gz.finish());
            finished.map_err(|e| Error::io("sending the tree", e))?;
            Ok(stats)
        }
        Err(e) => {
            // The builder and encoder write their ends when dropped: nothing more goes out.
            cut.set(true);
            Err(e)
        }
    }
}

fn append_all<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    manifest: &Manifest,
) -> Result<TransferStats> {
    let mut stats = TransferStats::default();
    let sending = |e| Error::io("sending the tree", e);
    for e in &manifest.entries {
        let rel = rel_path(&e.path)?;
        if !real_parents(root, &rel) {
            continue;
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(e.mode);
        header.set_mtime(u64::try_from(e.mtime_ns / 1_000_000_000).unwrap_or(0));
        match e.kind {
            FileKind::Dir => {
                header.set_entry_type(EntryType::Directory);
                header.set_size(0);
                tar.append_data(&mut header, &e.path, io::empty()).map_err(sending)?;
                stats.dirs += 1;
            }
            FileKind::Symlink => {
                header.set_entry_type(EntryType::Symlink);
                header.set_size(0);
                let target = e.target.as_deref().unwrap_or_default();
                tar.append_link(&mut header, &e.path, target).map_err(sending)?;
                stats.links += 1;
            }
            FileKind::File => {
                let abs = root.join(&rel);
                let Some((file, size)) = open_regular(&abs) else { continue };
                header.set_entry_type(EntryType::Regular);
                header.set_size(size);
                tar.append_data(&mut header, &e.path, Exact::new(file, size)).map_err(sending)?;
                stats.files += 1;
                stats.bytes += size;
            }
            FileKind::Other => {}
        }
    }
    Ok(stats)
}

/// The file at `abs` and its size, if it still is a regular file (not a symlink to one).
fn open_regular(abs: &Path) -> Option<(std::fs::File, u64)> {
    if !std::fs::symlink_metadata(abs).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let file = std::fs::File::open(abs).ok()?;
    let meta = file.metadata().ok().filter(|m| m.is_file())?;
    Some((file, meta.len()))
}

/// Exactly `size` bytes of a file: what it holds, cut at `size` if it grew, padded with zeros
/// if it shrank while read (the tar header already said `size`).
struct Exact<R> {
    inner: io::Take<R>,
    left: u64,
}

impl<R: Read> Exact<R> {
    fn new(inner: R, size: u64) -> Self {
        Exact { inner: inner.take(size), left: size }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = match self.inner.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// A writer that fails every write once `cut` is set.
struct Cuttable<'a> {
    out: &'a mut dyn Write,
    cut: &'a Cell<bool>,
}

impl Write for Cuttable<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cut.get() {
            return Err(io::Error::other("the stream was cut"));
        }
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TreeFilter;

    #[test]
    fn entry_names_are_relative_or_refused() {
        assert_eq!(entry_path(b"./").unwrap(), None);
        assert_eq!(entry_path(b".").unwrap(), None);
        assert_eq!(entry_path(b"./a/b").unwrap().as_deref(), Some("a/b"));
        assert_eq!(entry_path(b"sub/").unwrap().as_deref(), Some("sub"));
        for bad in [&b"../x"[..], b"/etc/passwd", b"/", b"a/../../x", b"./../x", b"a\xff"] {
            assert!(entry_path(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_packed_tree_extracts_the_same() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("d/e")).unwrap();
        std::fs::write(src.path().join("d/e/f.txt"), b"\x00\xffbytes").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("../../etc", src.path().join("d/link")).unwrap();
        let filter = TreeFilter { include_git: true, no_gitignore: true, ..Default::default() };
        let manifest = super::super::manifest::walk(src.path(), &filter).unwrap();
        let mut tgz = Vec::new();
        let sent = pack(src.path(), &manifest, &mut tgz).unwrap();
        assert_eq!((sent.files, sent.bytes), (1, 7));

        let dst = tempfile::tempdir().unwrap();
        let got = extract(
            &mut &tgz[..],
            dst.path(),
            Limits { max_file_size: 1 << 20, max_total: 1 << 30 },
        )
        .unwrap();
        assert_eq!((got.files, got.bytes), (1, 7));
        assert_eq!(std::fs::read(dst.path().join("d/e/f.txt")).unwrap(), b"\x00\xffbytes");
        #[cfg(unix)]
        assert_eq!(std::fs::read_link(dst.path().join("d/link")).unwrap(), Path::new("../../etc"));
        let err =
            extract(&mut &tgz[..], dst.path(), Limits { max_file_size: 3, max_total: 1 << 30 })
                .unwrap_err();
        assert_eq!(err.code, ErrorCode::FileTooLarge, "{err:?}");
    }

    #[test]
    fn a_short_file_is_padded_to_its_header_size() {
        let mut out = Vec::new();
        Exact::new(&b"abc"[..], 5).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0");
        out.clear();
        Exact::new(&b"abcdef"[..], 2).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ab");
    }
}
