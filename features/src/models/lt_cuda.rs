//! The cuBLASLt call behind [`super::gemm_epilogue`]: `D = X·Wᵀ + b (+ R)` with the bias in the
//! epilogue (`CUBLASLT_EPILOGUE_BIAS`) and the residual as `C` with `β = 1`, written to a new
//! buffer `D` (so no tensor that might share the residual's storage is overwritten). f32
//! accumulation and scale for every dtype (no TF32 for f32 inputs), on candle's stream.
//!
//! In cuBLAS's column-major terms the row-major `[rows, out]` output is `D (out × rows)`,
//! `W`'s row-major `[out, in]` buffer is `Wᵀ (in × out)` (so `op(A) = T`) and `X`'s buffer is
//! `Xᵀ (in × rows)` (`op(B) = N`); the bias is a vector over D's rows, as the epilogue wants.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublaslt::{result, sys};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result};
use half::{bf16, f16};
use std::cell::RefCell;
use std::ffi::c_void;
use std::rc::Rc;

/// Workspace offered to cuBLASLt (NVIDIA's recommendation for Hopper).
const WORKSPACE: usize = 32 << 20;

/// cuBLASLt's status as candle's error.
fn lt<T>(r: std::result::Result<T, result::CublasError>) -> Result<T> {
    r.map_err(|e| candle_core::Error::Msg(format!("cuBLASLt: {e:?}")))
}

/// A cuBLASLt handle and its workspace, one per device and thread.
struct Handle {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by `create_handle` and destroyed once, here.
        unsafe {
            let _ = result::destroy_handle(self.handle);
        }
    }
}

thread_local! {
    static HANDLES: RefCell<Vec<(candle_core::cuda_backend::DeviceId, Rc<Handle>)>> =
        const { RefCell::new(Vec::new()) };
}

fn handle(dev: &CudaDevice) -> Result<Rc<Handle>> {
    HANDLES.with(|h| {
        let mut h = h.borrow_mut();
        if let Some((_, handle)) = h.iter().find(|(id, _)| *id == dev.id()) {
            return Ok(handle.clone());
        }
        dev.cuda_stream().context().bind_to_thread().w()?;
        let handle = Rc::new(Handle {
            handle: lt(result::create_handle())?,
            // SAFETY: scratch space, never read before cuBLASLt writes it.
            workspace: unsafe { dev.alloc::<u8>(WORKSPACE)? },
        });
        h.push((dev.id(), handle.clone()));
        Ok(handle)
    })
}

/// Descriptors of one call, destroyed on drop.
struct Descriptors {
    desc: sys::cublasLtMatmulDesc_t,
    layouts: Vec<sys::cublasLtMatrixLayout_t>,
    pref: sys::cublasLtMatmulPreference_t,
}

impl Drop for Descriptors {
    fn drop(&mut self) {
        // SAFETY: each was created once by `result::create_*` and is destroyed once, here.
        unsafe {
            for l in &self.layouts {
                let _ = result::destroy_matrix_layout(*l);
            }
            let _ = result::destroy_matmul_desc(self.desc);
            let _ = result::destroy_matmul_pref(self.pref);
        }
    }
}

fn set_desc<T>(
    desc: sys::cublasLtMatmulDesc_t,
    attr: sys::cublasLtMatmulDescAttributes_t,
    v: &T,
) -> Result<()> {
    // SAFETY: `v` is a live value of the attribute's documented type and size.
    unsafe {
        lt(result::set_matmul_desc_attribute(
            desc,
            attr,
            v as *const T as *const c_void,
            std::mem::size_of::<T>(),
        ))
    }
}

fn contiguous(l: &Layout, what: &str) -> Result<(usize, usize)> {
    l.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::Msg(format!("{what} must be contiguous for the GEMM epilogue"))
    })
}

/// `x [rows, inp] · wᵀ + b (+ residual)` into a new `[rows, out]` buffer of `x`'s dtype.
pub(super) fn linear(
    (x, xl): (&CudaStorage, &Layout),
    (w, wl): (&CudaStorage, &Layout),
    (b, bl): (&CudaStorage, &Layout),
    residual: Option<(&CudaStorage, &Layout)>,
    (rows, inp, out): (usize, usize, usize),
) -> Result<CudaStorage> {
    fn run<T: CudaDType + DeviceRepr>(
        data_type: sys::cudaDataType,
        (x, xl): (&CudaStorage, &Layout),
        (w, wl): (&CudaStorage, &Layout),
        (b, bl): (&CudaStorage, &Layout),
        residual: Option<(&CudaStorage, &Layout)>,
        (rows, inp, out): (usize, usize, usize),
    ) -> Result<CudaStorage> {
        let dev: CudaDevice = x.device().clone();
        let stream = dev.cuda_stream();
        let (x0, x1) = contiguous(xl, "the input")?;
        let (w0, w1) = contiguous(wl, "the weight")?;
        let (b0, b1) = contiguous(bl, "the bias")?;
        let xs = x.as_cuda_slice::<T>()?.slice(x0..x1);
        let ws = w.as_cuda_slice::<T>()?.slice(w0..w1);
        let bs = b.as_cuda_slice::<T>()?.slice(b0..b1);
        let rs = match residual {
            Some((r, rl)) => {
                let (r0, r1) = contiguous(rl, "the residual")?;
                Some(r.as_cuda_slice::<T>()?.slice(r0..r1))
            }
            None => None,
        };
        let mut d = unsafe { dev.alloc::<T>(rows * out)? };
        let handle = handle(&dev)?;
        use sys::cublasLtMatmulDescAttributes_t as A;
        let mut desc = Descriptors {
            desc: lt(result::create_matmul_desc(
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cudaDataType_t::CUDA_R_32F,
            ))?,
            layouts: Vec::new(),
            pref: lt(result::create_matmul_pref())?,
        };
        // cublasOperation_t values: CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 (32-bit).
        let (trans, no_trans) = (1i32, 0i32);
        set_desc(desc.desc, A::CUBLASLT_MATMUL_DESC_TRANSA, &trans)?;
        set_desc(desc.desc, A::CUBLASLT_MATMUL_DESC_TRANSB, &no_trans)?;
        set_desc(
            desc.desc,
            A::CUBLASLT_MATMUL_DESC_EPILOGUE,
            &sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
        )?;
        let (b_ptr, _b_rec) = bs.device_ptr(&stream);
        set_desc(desc.desc, A::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b_ptr)?;
        // A = W's buffer (in × out, lda = in), B = X's (in × rows), C and D out × rows.
        for (r, c, ld) in [(inp, out, inp), (inp, rows, inp), (out, rows, out)] {
            desc.layouts.push(lt(result::create_matrix_layout(
                data_type, r as u64, c as u64, ld as i64,
            ))?);
        }
        let (la, lb, lc) = (desc.layouts[0], desc.layouts[1], desc.layouts[2]);
        let (alpha, beta) = (1f32, if rs.is_some() { 1f32 } else { 0f32 });
        {
            let (a_ptr, _a_rec) = ws.device_ptr(&stream);
            let (x_ptr, _x_rec) = xs.device_ptr(&stream);
            let (work_ptr, _w_rec) = handle.workspace.device_ptr(&stream);
            let (d_ptr, _d_rec) = d.device_ptr_mut(&stream);
            let r_ptr = rs.as_ref().map(|r| r.device_ptr(&stream));
            // β = 0: C is not read, and D stands in for it.
            let c_ptr = r_ptr.as_ref().map_or(d_ptr, |(p, _)| *p);
            // The heuristic assumes 256-byte aligned operands unless told otherwise; a view's
            // offset can leave less, so it is told each pointer's actual alignment.
            use sys::cublasLtMatmulPreferenceAttributes_t as P;
            let align = |p: u64| (1u32 << p.trailing_zeros().min(8)).max(1);
            let prefs = [
                (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align(a_ptr)),
                (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align(x_ptr)),
                (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align(c_ptr)),
                (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align(d_ptr)),
            ];
            let ws_size = WORKSPACE as u64;
            // SAFETY: the workspace size is a uint64 byte count, the alignments uint32 values.
            unsafe {
                lt(result::set_matmul_pref_attribute(
                    desc.pref,
                    P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                    &ws_size as *const u64 as *const c_void,
                    std::mem::size_of::<u64>(),
                ))?;
                for (attr, v) in &prefs {
                    lt(result::set_matmul_pref_attribute(
                        desc.pref,
                        *attr,
                        v as *const u32 as *const c_void,
                        std::mem::size_of::<u32>(),
                    ))?;
                }
            }
            // SAFETY: the descriptors are live; the layouts describe the buffers below.
            let heuristic = unsafe {
                lt(result::get_matmul_algo_heuristic(
                    handle.handle,
                    desc.desc,
                    la,
                    lb,
                    lc,
                    lc,
                    desc.pref,
                ))?
            };
            // SAFETY: every pointer addresses a live buffer of the size its layout describes, on
            // candle's stream; the output is a fresh allocation distinct from every input.
            unsafe {
                lt(result::matmul(
                    handle.handle,
                    desc.desc,
                    &alpha as *const f32 as *const c_void,
                    &beta as *const f32 as *const c_void,
                    a_ptr as *const c_void,
                    la,
                    x_ptr as *const c_void,
                    lb,
                    c_ptr as *const c_void,
                    lc,
                    d_ptr as *mut c_void,
                    lc,
                    &heuristic.algo,
                    work_ptr as *mut c_void,
                    WORKSPACE,
                    stream.cu_stream() as sys::cudaStream_t,
                ))?;
            }
        }
        Ok(CudaStorage::wrap_cuda_slice(d, dev))
    }
    use sys::cudaDataType_t as T;
    let args = ((x, xl), (w, wl), (b, bl), residual, (rows, inp, out));
    match x.dtype() {
        DType::BF16 => run::<bf16>(T::CUDA_R_16BF, args.0, args.1, args.2, args.3, args.4),
        DType::F16 => run::<f16>(T::CUDA_R_16F, args.0, args.1, args.2, args.3, args.4),
        DType::F32 => run::<f32>(T::CUDA_R_32F, args.0, args.1, args.2, args.3, args.4),
        other => candle_core::bail!("the GEMM epilogue supports f32/bf16/f16, not {other:?}"),
    }
}
