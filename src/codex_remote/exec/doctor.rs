//! `exec doctor`: what jobs on the machine will find.

use super::super::{Ctx, original_fields, output};
use super::DoctorArgs;
use crate::error::{Result, exit};
use crate::protocol::{DoctorCheck, DoctorReport, DoctorRequest, Request, Response};
use crate::remote::client;

/// `exec doctor`: the transport and codexd checked from here, the rest by codexd there.
pub(super) fn doctor(ctx: &Ctx, args: DoctorArgs) -> Result<u8> {
    let m = ctx.machine(args.machine.machine.as_deref())?;
    let check = |name: &str, ok: bool, detail: String, hint: Option<String>| DoctorCheck {
        name: name.into(),
        ok,
        required: true,
        detail,
        hint: if ok { None } else { hint },
    };
    let mut checks = Vec::new();
    let started = std::time::Instant::now();
    let door = m.route.door();
    let remote = client::hello(&m).and_then(|hello| {
        let elapsed = started.elapsed().as_millis();
        checks.push(check(door, true, format!("{} answered in {elapsed} ms", m.name), None));
        let same = hello.protocol == crate::protocol::PROTOCOL_VERSION;
        let detail = format!(
            "codexd {} (protocol {}) as {} on {}; this codex-remote is {}",
            hello.version,
            hello.protocol,
            hello.user,
            hello.host,
            crate::version::VERSION
        );
        let hint = Some(format!("codex-remote machine up --machine {}", m.name));
        checks.push(check("codexd", same, detail, hint));
        // `local` in-process: the handlers are this binary's; the worker is codexd's.
        #[cfg(target_os = "linux")]
        if let crate::remote::machine::Route::Local { codexd, in_process: true, .. } = &m.route {
            let (ok, detail) = crate::remote::in_process::worker_check(codexd);
            let hint = "install codexd from the same release as codex-remote, next to it";
            checks.push(check("worker", ok, detail, Some(hint.into())));
        }
        let timeout_ms = Some(args.timeout.as_millis() as u64);
        match m.call(
            &Request::Doctor(DoctorRequest { timeout_ms, ..DoctorRequest::default() }),
            &mut |_| Ok(()),
        )? {
            Response::Doctor(report) => Ok(report),
            other => Err(client::unexpected(&other)),
        }
    });
    match remote {
        Ok(report) => checks.extend(report.checks),
        Err(e) => {
            let name = if checks.is_empty() { door } else { "codexd" };
            let hint =
                e.hint.clone().or(Some(format!("codex-remote machine check --machine {}", m.name)));
            checks.push(check(name, false, format!("{}: {}", e.code, e.message), hint));
        }
    }
    let report = DoctorReport { ok: checks.iter().all(|c| c.ok || !c.required), checks };
    if output::table(args.json) {
        print_doctor(&m.name, &report);
    } else {
        original_fields::emit_on_with(&m, &report, original_fields::doctor(&report))?;
    }
    Ok(if report.ok { exit::OK } else { exit::JOB_FAILED })
}

fn print_doctor(machine: &str, report: &DoctorReport) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{machine}: {}", if report.ok { "ok" } else { "NOT OK" });
    for c in &report.checks {
        let mark = match (c.ok, c.required) {
            (true, _) => "ok  ",
            (false, true) => "FAIL",
            (false, false) => "-   ",
        };
        let _ = writeln!(out, "  {mark} {:<11} {}", c.name, c.detail);
        if let Some(hint) = &c.hint {
            let _ = writeln!(out, "       {:<11} hint: {hint}", "");
        }
    }
}
