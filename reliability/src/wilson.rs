//! The Wilson score interval of a binomial share.

/// A confidence interval of a share in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// The observed share `k / n` (0 when `n` is 0).
    pub p: f64,
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

/// The Wilson score interval of `k` successes in `n` trials at `z` standard deviations
/// (1.96 for about 95 %). With no trials it is the whole `[0, 1]`.
pub fn wilson(k: u64, n: u64, z: f64) -> Interval {
    if n == 0 {
        return Interval {
            p: 0.0,
            lo: 0.0,
            hi: 1.0,
        };
    }
    let k = k.min(n);
    let nf = n as f64;
    let p = k as f64 / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let centre = (p + z2 / (2.0 * nf)) / denom;
    let half = z / denom * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    Interval {
        p,
        lo: (centre - half).clamp(0.0, 1.0),
        hi: (centre + half).clamp(0.0, 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 5e-4
    }

    #[test]
    fn known_values() {
        // Reference values (z = 1.96) computed independently from the closed form.
        let i = wilson(1, 3, 1.96);
        assert!(close(i.lo, 0.0615) && close(i.hi, 0.7923), "{i:?}");
        let i = wilson(300, 900, 1.96);
        assert!(close(i.lo, 0.3033) && close(i.hi, 0.3648), "{i:?}");
        let i = wilson(0, 10, 1.96);
        assert!(close(i.lo, 0.0) && close(i.hi, 0.2775), "{i:?}");
        let i = wilson(4, 4, 1.96);
        assert!(close(i.lo, 0.5101) && close(i.hi, 1.0), "{i:?}");
    }

    #[test]
    fn one_in_three_is_not_three_hundred_in_nine_hundred() {
        let small = wilson(1, 3, 1.96);
        let large = wilson(300, 900, 1.96);
        assert_eq!(small.p, large.p);
        assert!(small.hi - small.lo > 10.0 * (large.hi - large.lo));
    }

    #[test]
    fn empty_and_out_of_range() {
        assert_eq!(
            wilson(0, 0, 1.96),
            Interval {
                p: 0.0,
                lo: 0.0,
                hi: 1.0
            }
        );
        // k > n is clamped rather than producing NaN.
        let i = wilson(5, 3, 1.96);
        assert!(i.lo.is_finite() && i.hi <= 1.0 && i.p == 1.0);
    }
}
