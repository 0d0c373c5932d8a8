//! A closed stdout pipe (`gapprobe … | head`) ends the process by SIGPIPE, quietly, not with a
//! panic and a backtrace.

mod cache_support;

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

#[test]
fn a_closed_stdout_pipe_ends_the_process_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = cache_support::bin()
        .args([
            "cache", "bench", "--rows", "256", "--dim", "64", "--reps", "1", "--dir",
        ])
        .arg(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the child has printed anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}
