//! The binary's log output when it is not a terminal (a pod's stdout is a file).

use std::process::Command;

#[test]
fn logs_to_a_file_carry_no_colour_codes() {
    // A one-minute demo at 100,000x: a second of work that logs at least its shutdown.
    let out = Command::new(env!("CARGO_BIN_EXE_derm-adapter"))
        .args(["demo", "--listen", "127.0.0.1:0", "--speed", "100000", "--minutes", "1", "--exit"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run derm-adapter: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "demo failed: {stderr}");
    assert!(stdout.contains("INFO") && stdout.contains("draining connections"), "no log line on stdout:\n{stdout}");
    assert!(!stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'), "escape codes in the output:\n{stdout}");
}
