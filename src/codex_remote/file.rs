//! `codex-remote file write|read|stat|ls`: one file on a machine, byte-exact. A write is atomic
//! on the machine (temp file and rename); a read is paged by offsets, so no byte is lost or
//! repeated, and `--dst` writes the local file atomically too.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::exec::MachineArg;
use super::{Ctx, emit_on, emit_raw, original_fields, usage};
use crate::error::{Error, ErrorCode, Result, exit};
use crate::protocol::files::octal;
use crate::protocol::{
    FileData, FileReadRequest, FileWriteRequest, PathRequest, Request, Response, capability,
};
use crate::remote::client::unexpected;
use crate::remote::machine::Machine;
use crate::remote::transport::Session;

#[derive(Debug, Subcommand)]
pub enum FileCommand {
    /// Write a file on the machine atomically, from --content or a local --src file.
    #[command(after_help = "Examples:
  codex-remote file write -m gpu1 --dst '~/proj/config.yaml' --src config.yaml --mkdir
  codex-remote file write -m gpu1 --dst run.sh --content 'echo hi' --mode 755")]
    Write(WriteArgs),
    /// Read a file: one JSON object with the bytes in base64, or the bytes into --dst or stdout.
    #[command(after_help = "Examples:
  codex-remote file read -m gpu1 --path '~/proj/out.csv' --dst out.csv
  codex-remote file read -m gpu1 --path train.log --raw --offset 1000 --limit 4096")]
    Read(ReadArgs),
    /// What a path on the machine is: kind, size, mode, mtime, a symlink's target.
    #[command(after_help = "Examples:
  codex-remote file stat --machine gpu1 --path '~/proj'")]
    Stat(PathArgs),
    /// The entries of a directory on the machine.
    #[command(after_help = "Examples:
  codex-remote file ls --machine gpu1 --path '~/proj/checkpoints'")]
    Ls(PathArgs),
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    #[command(flatten)]
    machine: MachineArg,
    /// The file on the machine (`~` and relative paths are from the remote home).
    #[arg(long)]
    dst: String,
    /// The content, as text.
    #[arg(long, conflicts_with = "src", required_unless_present = "src")]
    content: Option<String>,
    /// A local regular file whose bytes are the content.
    #[arg(long, value_name = "FILE")]
    src: Option<PathBuf>,
    /// The mode, in octal (default: the replaced file's, else 0644).
    #[arg(long, value_parser = octal::parse)]
    mode: Option<u32>,
    /// Create missing parent directories.
    #[arg(long)]
    mkdir: bool,
    /// Write to the target of a symlink at --dst (refused otherwise).
    #[arg(long)]
    follow_symlinks: bool,
    /// Keep setuid, setgid and sticky bits of --mode (cleared by default).
    #[arg(long)]
    keep_special_bits: bool,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    machine: MachineArg,
    /// The file on the machine.
    #[arg(long)]
    path: String,
    /// Write the bytes to this local file (atomically) instead of printing them.
    #[arg(long, value_name = "LOCAL")]
    dst: Option<PathBuf>,
    /// Start at this byte offset (a `next_offset` printed before).
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Read at most this many bytes (default: to the end).
    #[arg(long)]
    limit: Option<u64>,
    /// Write the bytes themselves to stdout.
    #[arg(long, conflicts_with = "dst")]
    raw: bool,
}

#[derive(Debug, Args)]
pub struct PathArgs {
    #[command(flatten)]
    machine: MachineArg,
    /// The path on the machine.
    #[arg(long)]
    path: String,
}

pub fn run(ctx: &Ctx, cmd: FileCommand) -> Result<u8> {
    match cmd {
        FileCommand::Write(args) => {
            let m = ctx.machine(args.machine.machine.as_deref())?;
            let answer = write(&m, &args)?;
            original_fields::emit_on_with(&m, &answer, original_fields::file_written)?;
        }
        FileCommand::Read(args) => read(ctx, args)?,
        FileCommand::Stat(args) => {
            let m = ctx.machine(args.machine.machine.as_deref())?;
            let answer =
                m.call(&Request::FileStat(PathRequest { path: args.path }), &mut |_| Ok(()))?;
            emit_on(&m, &answer)?;
        }
        FileCommand::Ls(args) => {
            let m = ctx.machine(args.machine.machine.as_deref())?;
            let answer =
                m.call(&Request::FileLs(PathRequest { path: args.path }), &mut |_| Ok(()))?;
            emit_on(&m, &answer)?;
        }
    }
    Ok(exit::OK)
}

/// The content of a `file write`: text, or a local regular file (never a socket or device).
pub enum Content<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

/// Writes `content` to `dst` on the machine; setuid, setgid and sticky bits are cleared unless
/// `keep_special_bits`.
pub fn write_content(
    m: &Machine,
    dst: &str,
    content: Content,
    mode: Option<u32>,
    mkdir: bool,
    follow_symlinks: bool,
    keep_special_bits: bool,
) -> Result<Response> {
    let (mut reader, size): (Box<dyn Read>, u64) = match content {
        Content::Bytes(b) => (Box::new(b), b.len() as u64),
        Content::File(path) => {
            let not_file = || {
                usage(format!(
                    "--src {} is not a regular file (a directory, socket or device)",
                    path.display()
                ))
            };
            // Checked before opening: opening a socket or a fifo fails or blocks.
            let meta = std::fs::metadata(path)
                .map_err(|e| usage(format!("--src {}: {e}", path.display())))?;
            if !meta.is_file() {
                return Err(not_file());
            }
            let file = std::fs::File::open(path)
                .map_err(|e| usage(format!("--src {}: {e}", path.display())))?;
            let meta = file.metadata().map_err(|e| Error::io("--src", e))?;
            if !meta.is_file() {
                return Err(not_file());
            }
            (Box::new(file), meta.len())
        }
    };
    let req = FileWriteRequest {
        path: dst.to_string(),
        size,
        mode,
        mkdir,
        follow_symlinks,
        keep_special_bits,
    };
    let mut session = m.session(capability::FILES)?;
    let answer = session.exchange(
        &Request::FileWrite(req),
        &mut |w| {
            let copied = std::io::copy(&mut (&mut reader).take(size), w)
                .map_err(|e| Error::io("sending the content", e))?;
            if copied < size {
                return Err(Error::invalid("the source file shrank while it was sent"));
            }
            Ok(())
        },
        &mut |_| Ok(()),
    )?;
    session.close()?;
    Ok(answer)
}

fn write(m: &Machine, args: &WriteArgs) -> Result<Response> {
    let content = match (&args.content, &args.src) {
        (Some(text), _) => Content::Bytes(text.as_bytes()),
        (None, Some(path)) => Content::File(path),
        (None, None) => return Err(usage("give --content TEXT or --src FILE")),
    };
    let (mode, mkdir, follow) = (args.mode, args.mkdir, args.follow_symlinks);
    write_content(m, &args.dst, content, mode, mkdir, follow, args.keep_special_bits)
}

/// Reads pages of `path` from `offset` until `limit` bytes or the end, giving each to `page`.
pub fn read_pages(
    session: &mut Session,
    path: &str,
    offset: u64,
    limit: Option<u64>,
    page: &mut dyn FnMut(&FileData, Vec<u8>) -> Result<()>,
) -> Result<FileData> {
    let mut next = offset;
    let mut left = limit;
    loop {
        let req = FileReadRequest { path: path.to_string(), offset: Some(next), limit: left };
        let data = match session.call(&Request::FileRead(req))? {
            Response::FileData(d) => d,
            other => return Err(unexpected(&other)),
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.data_b64.as_bytes())
            .map_err(|e| Error::new(ErrorCode::ProtocolError, format!("bad base64: {e}")))?;
        let got = bytes.len() as u64;
        page(&data, bytes)?;
        next = data.next_offset;
        left = left.map(|l| l - got.min(l));
        if data.eof || got == 0 || left == Some(0) {
            return Ok(data);
        }
    }
}

/// What `file read --dst` prints.
#[derive(Serialize)]
struct ReadToFile<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    path: &'a str,
    dst: String,
    offset: u64,
    bytes: u64,
    size: u64,
    next_offset: u64,
    eof: bool,
}

fn read(ctx: &Ctx, args: ReadArgs) -> Result<()> {
    let m = ctx.machine(args.machine.machine.as_deref())?;
    let mut session = m.session(capability::FILES)?;
    if args.raw {
        read_pages(&mut session, &args.path, args.offset, args.limit, &mut |_, bytes| {
            emit_raw(false, &bytes)
        })?;
        return session.close();
    }
    if let Some(dst) = &args.dst {
        let dir = match dst.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Some(name) = dst.file_name() else {
            return Err(usage(format!("--dst {} names no file", dst.display())));
        };
        let into = |e| Error::file_io(format!("writing into {}", dir.display()), e);
        let dir = crate::tree::at::Dir::open(&dir).map_err(into)?;
        let mut tmp = crate::tree::at::Temp::new(&dir).map_err(into)?;
        let mut bytes = 0;
        let last = read_pages(&mut session, &args.path, args.offset, args.limit, &mut |_, b| {
            bytes += b.len() as u64;
            let written = tmp.file.write_all(&b);
            written.map_err(|e| Error::file_io(format!("writing {}", dst.display()), e))
        })?;
        session.close()?;
        crate::tree::apply::finish(tmp, name, 0o644, None)?;
        let out = ReadToFile {
            kind: "file_read",
            path: &last.path,
            dst: dst.display().to_string(),
            offset: args.offset,
            bytes,
            size: last.size,
            next_offset: last.next_offset,
            eof: last.eof,
        };
        return emit_on(&m, &out);
    }
    let mut all = Vec::new();
    let mut last = read_pages(&mut session, &args.path, args.offset, args.limit, &mut |_, b| {
        all.extend_from_slice(&b);
        Ok(())
    })?;
    session.close()?;
    last.offset = args.offset;
    last.data_b64 = base64::engine::general_purpose::STANDARD.encode(&all);
    original_fields::emit_on_with(&m, &Response::FileData(last), original_fields::file_content)
}
