//! Where a forward pass spends its time, stage by stage (`gapprobe bench --stages`).
//!
//! The models call [`mark`] after each stage (the q|k|v GEMM, attention, each Linear with what is
//! fused into it, the embeddings, the projector). Outside [`record`] a mark costs one
//! thread-local read. Inside, it waits for the device to finish the stage's work and adds the
//! wall time since the previous mark to the stage's total, so the totals add up to the pass.
//! The waits cost each stage its launch overlap with the next (microseconds each), which is
//! why the benchmark's throughput figures come from unmarked runs.

use candle_core::{Device, Result, Tensor};
use std::cell::RefCell;
use std::time::Instant;

/// One stage's total over a recorded pass.
#[derive(Debug, Clone, PartialEq)]
pub struct StageTime {
    pub name: &'static str,
    /// Milliseconds, summed over calls.
    pub ms: f64,
    pub calls: usize,
}

struct Recorder {
    last: Instant,
    stages: Vec<StageTime>,
}

thread_local! {
    static RECORDER: RefCell<Option<Recorder>> = const { RefCell::new(None) };
}

/// Ends stage `name`, whose output is `t`: while [`record`] runs on this thread, waits for `t`'s
/// device and books the time since the previous mark to `name`; otherwise does nothing.
pub fn mark(t: &Tensor, name: &'static str) -> Result<()> {
    if RECORDER.with(|r| r.borrow().is_none()) {
        return Ok(());
    }
    t.device().synchronize()?;
    RECORDER.with(|r| {
        if let Some(rec) = r.borrow_mut().as_mut() {
            let now = Instant::now();
            let ms = (now - rec.last).as_secs_f64() * 1e3;
            rec.last = now;
            match rec.stages.iter_mut().find(|s| s.name == name) {
                Some(s) => {
                    s.ms += ms;
                    s.calls += 1;
                }
                None => rec.stages.push(StageTime { name, ms, calls: 1 }),
            }
        }
    });
    Ok(())
}

/// Runs `f` with marks recording on this thread, from a synchronised `device`; returns its
/// result and the stages in the order first marked. Time after the last mark is booked to
/// `"(after the last mark)"`.
pub fn record<R>(device: &Device, f: impl FnOnce() -> Result<R>) -> Result<(R, Vec<StageTime>)> {
    device.synchronize()?;
    RECORDER.with(|r| {
        *r.borrow_mut() = Some(Recorder {
            last: Instant::now(),
            stages: Vec::new(),
        })
    });
    let out = f().and_then(|v| device.synchronize().map(|_| v));
    let rec = RECORDER.with(|r| r.borrow_mut().take());
    let out = out?;
    let mut stages = Vec::new();
    if let Some(rec) = rec {
        stages = rec.stages;
        stages.push(StageTime {
            name: "(after the last mark)",
            ms: rec.last.elapsed().as_secs_f64() * 1e3,
            calls: 1,
        });
    }
    Ok((out, stages))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marks book to their stage only while recording, in first-marked order, with call counts.
    #[test]
    fn marks_book_only_while_recording() {
        let dev = Device::Cpu;
        let t = Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap();
        mark(&t, "outside").unwrap();
        let (v, stages) = record(&dev, || {
            for _ in 0..3 {
                mark(&t, "a")?;
                mark(&t, "b")?;
            }
            Ok(7)
        })
        .unwrap();
        assert_eq!(v, 7);
        let names: Vec<_> = stages.iter().map(|s| (s.name, s.calls)).collect();
        assert_eq!(names, [("a", 3), ("b", 3), ("(after the last mark)", 1)]);
        assert!(stages.iter().all(|s| s.ms >= 0.0));
        // Recording ended: marks are free again.
        mark(&t, "after").unwrap();
        let (_, again) = record(&dev, || Ok(())).unwrap();
        assert_eq!(again.len(), 1);
    }
}
