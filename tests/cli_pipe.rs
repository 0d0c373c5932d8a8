//! A closed stdout pipe (`gapprobe … | head`) ends the process by SIGPIPE, quietly, not with a
//! panic and a backtrace.

mod cache_support;

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

#[test]
fn a_closed_stdout_pipe_ends_the_process_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    // The pipe's reader is gone before the child starts, so its first print meets a closed pipe.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = cache_support::bin()
        .args([
            "cache", "bench", "--rows", "256", "--dim", "64", "--reps", "1", "--dir",
        ])
        .arg(tmp.path())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}
