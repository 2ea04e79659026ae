//! Scalar elementary functions as torch evaluates them on 0-d float32 tensors.
//!
//! ComfyUI's samplers compute their per-step scalars (`λ = −ln σ`, `e^{−h}`, `expm1`, φ
//! functions, …) as 0-d float32 tensors. On x86 CPUs torch routes `exp`, `log`, `expm1`,
//! `tanh`, `sin`, `cos`, … through MKL's vector maths in high-accuracy mode, whose float32
//! results are the correctly rounded value for ≈99 % of inputs (and 1 ulp away otherwise).
//! The platform `f32` functions (`expf`, `logf`, `expm1f` of the C library) are further from
//! correct rounding; with cfg 4 the difference grows through the guided ODE to >1e-5 in
//! `x_out`. So float32 scalars here are evaluated in float64 and rounded once, i.e.
//! correctly rounded (up to rare double-rounding ties), which is the closest portable model
//! of torch's values. `f64` values keep the plain `f64` functions.

/// Torch-like elementary functions (see the module docs).
pub(crate) trait TorchMath: Copy {
    /// `exp`.
    fn texp(self) -> Self;
    /// Natural logarithm.
    fn tln(self) -> Self;
    /// `expm1`.
    fn texpm1(self) -> Self;
}

impl TorchMath for f32 {
    fn texp(self) -> f32 {
        (self as f64).exp() as f32
    }
    fn tln(self) -> f32 {
        (self as f64).ln() as f32
    }
    fn texpm1(self) -> f32 {
        (self as f64).exp_m1() as f32
    }
}

impl TorchMath for f64 {
    fn texp(self) -> f64 {
        self.exp()
    }
    fn tln(self) -> f64 {
        self.ln()
    }
    fn texpm1(self) -> f64 {
        self.exp_m1()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float32_results_are_correctly_rounded() {
        assert_eq!(0.0f32.texp(), 1.0);
        assert_eq!(1.0f32.tln(), 0.0);
        assert_eq!(0.0f32.texpm1(), 0.0);
    }

    /// Inputs where torch 2.11 (CPU, AVX512) returns the correctly rounded value and the C
    /// library's float32 function does not (checked against torch; bit patterns).
    #[test]
    fn matches_torch_where_the_c_library_is_off() {
        type Case = (fn(f32) -> f32, u32, u32);
        let cases: [Case; 6] = [
            (|x| x.texpm1(), 3213789328, 3207327335),
            (|x| x.texpm1(), 3214479980, 3207762775),
            (|x| x.texp(), 1050258608, 1068289693),
            (|x| x.texp(), 1062692496, 1075082459),
            (|x| x.tln(), 1065114790, 3161096729),
            (|x| x.tln(), 1093844985, 1075475744),
        ];
        for (f, x, want) in cases {
            assert_eq!(f(f32::from_bits(x)).to_bits(), want, "input bits {x}");
        }
    }
}
