//! Backtest metrics from a series of periodic simple returns. Definitions (documented in
//! docs/registry.md, pinned in the tests against an independent numpy computation, tests/reference/):
//!
//! - excess return e_i = r_i - risk_free / periods_per_year
//! - sharpe = mean(e) / stdev(e) * sqrt(periods_per_year), stdev with n - 1 (None if n < 2 or 0)
//! - sortino = mean(e) / sqrt(sum(min(e_i, 0)^2) / n) * sqrt(periods_per_year) (None if no
//!   downside)
//! - volatility = stdev(r) * sqrt(periods_per_year)
//! - equity E_k = prod_{i<=k} (1 + r_i), E_0 = 1; max_drawdown = max_k (1 - E_k / max_{j<=k} E_j)
//! - cagr = E_n ^ (periods_per_year / n) - 1; total_return = E_n - 1
//! - hit_rate = count(r_i > 0) / n

#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub n: usize,
    pub sharpe: Option<f64>,
    pub sortino: Option<f64>,
    pub max_drawdown: f64,
    pub cagr: f64,
    pub volatility: Option<f64>,
    pub hit_rate: f64,
    pub total_return: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("returns must not be empty")]
    Empty,
    #[error("returns[{0}] is not a finite number")]
    NotFinite(usize),
    #[error("returns[{0}] is {1}: a simple return cannot be below -1")]
    BelowMinusOne(usize, f64),
    #[error("returns[{0}] is null")]
    Null(usize),
    #[error("periods_per_year must be between 1 and 100000, not {0}")]
    Periods(i32),
    #[error("risk_free must be a finite number")]
    RiskFree,
}

pub fn compute(returns: &[Option<f64>], periods_per_year: i32, risk_free: f64) -> Result<Metrics, MetricsError> {
    if !(1..=100_000).contains(&periods_per_year) {
        return Err(MetricsError::Periods(periods_per_year));
    }
    if !risk_free.is_finite() {
        return Err(MetricsError::RiskFree);
    }
    if returns.is_empty() {
        return Err(MetricsError::Empty);
    }
    let mut r = Vec::with_capacity(returns.len());
    for (i, x) in returns.iter().enumerate() {
        let x = x.ok_or(MetricsError::Null(i + 1))?;
        if !x.is_finite() {
            return Err(MetricsError::NotFinite(i + 1));
        }
        if x < -1.0 {
            return Err(MetricsError::BelowMinusOne(i + 1, x));
        }
        r.push(x);
    }
    Ok(of_checked(&r, periods_per_year, risk_free))
}

/// The metrics of returns already checked: not empty, each finite and at least -1, and
/// `periods_per_year` in 1..=100000, `risk_free` finite (the backtest engine's own returns).
pub fn of_checked(r: &[f64], periods_per_year: i32, risk_free: f64) -> Metrics {
    let n = r.len();
    let ppy = periods_per_year as f64;
    let rf = risk_free / ppy;
    let mean = |v: &dyn Fn(f64) -> f64| r.iter().map(|x| v(*x)).sum::<f64>() / n as f64;
    let stdev = |m: f64, v: &dyn Fn(f64) -> f64| -> Option<f64> {
        if n < 2 {
            return None;
        }
        let s = (r.iter().map(|x| (v(*x) - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
        (s > 0.0).then_some(s)
    };
    let me = mean(&|x| x - rf);
    let sharpe = stdev(me, &|x| x - rf).map(|s| me / s * ppy.sqrt());
    let down = (r.iter().map(|x| (x - rf).min(0.0).powi(2)).sum::<f64>() / n as f64).sqrt();
    let sortino = (down > 0.0).then(|| me / down * ppy.sqrt());
    let mr = mean(&|x| x);
    let volatility = if n < 2 { None } else { Some(stdev(mr, &|x| x).unwrap_or(0.0) * ppy.sqrt()) };
    let (mut equity, mut peak, mut mdd) = (1.0f64, 1.0f64, 0.0f64);
    for x in r {
        equity *= 1.0 + x;
        peak = peak.max(equity);
        if peak > 0.0 {
            mdd = mdd.max(1.0 - equity / peak);
        }
    }
    let cagr = if equity > 0.0 { equity.powf(ppy / n as f64) - 1.0 } else { -1.0 };
    let hits = r.iter().filter(|x| **x > 0.0).count();
    Metrics {
        n,
        sharpe,
        sortino,
        max_drawdown: mdd.clamp(0.0, 1.0),
        cagr,
        volatility,
        hit_rate: hits as f64 / n as f64,
        total_return: equity - 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    /// Reference values from tests/reference/backtest_metrics.py (numpy, written independently
    /// from the definitions in this module's doc), for its series A and B.
    #[test]
    fn pinned_against_the_numpy_reference() {
        let a = [0.01, -0.02, 0.015, 0.003, -0.007, 0.012, -0.001, 0.0, 0.02, -0.011];
        let b = [0.05, 0.04, -0.1, -0.2, 0.3, 0.01];
        for (series, ppy, rf, r) in [(&a[..], 252, 0.0, REF_A), (&b[..], 12, 0.02, REF_B)] {
            let returns: Vec<Option<f64>> = series.iter().map(|x| Some(*x)).collect();
            let m = compute(&returns, ppy, rf).unwrap();
            let got = [m.sharpe.unwrap(), m.sortino.unwrap(), m.max_drawdown, m.cagr, m.volatility.unwrap(), m.hit_rate, m.total_return];
            let names = ["sharpe", "sortino", "max_drawdown", "cagr", "volatility", "hit_rate", "total_return"];
            for i in 0..7 {
                assert!(close(got[i], r[i]), "{} of {series:?}: {} vs {}", names[i], got[i], r[i]);
            }
        }
    }

    // sharpe, sortino, max_drawdown, cagr, volatility, hit_rate, total_return
    const REF_A: [f64; 7] = include!("../../tests/reference/backtest_metrics_a.txt");
    const REF_B: [f64; 7] = include!("../../tests/reference/backtest_metrics_b.txt");

    #[test]
    fn edge_cases() {
        // a single period: no dispersion, so no sharpe, sortino or volatility
        let m = compute(&[Some(0.01)], 252, 0.0).unwrap();
        assert_eq!((m.sharpe, m.sortino, m.volatility), (None, None, None));
        assert_eq!(m.max_drawdown, 0.0);
        // all gains: no downside, no drawdown
        let m = compute(&[Some(0.01), Some(0.02)], 252, 0.0).unwrap();
        assert!(m.sortino.is_none() && m.max_drawdown == 0.0 && m.hit_rate == 1.0);
        // a total loss: drawdown 1, cagr -1
        let m = compute(&[Some(0.1), Some(-1.0), Some(0.5)], 252, 0.0).unwrap();
        assert_eq!(m.max_drawdown, 1.0);
        assert_eq!(m.cagr, -1.0);
        // flat: sharpe undefined, volatility 0
        let m = compute(&[Some(0.0), Some(0.0), Some(0.0)], 252, 0.0).unwrap();
        assert_eq!(m.sharpe, None);
        assert_eq!(m.volatility, Some(0.0));
    }

    #[test]
    fn bad_input() {
        assert_eq!(compute(&[], 252, 0.0), Err(MetricsError::Empty));
        assert_eq!(compute(&[Some(0.1), Some(f64::NAN)], 252, 0.0), Err(MetricsError::NotFinite(2)));
        assert_eq!(compute(&[Some(f64::INFINITY)], 252, 0.0), Err(MetricsError::NotFinite(1)));
        assert_eq!(compute(&[Some(0.1), None], 252, 0.0), Err(MetricsError::Null(2)));
        assert_eq!(compute(&[Some(-1.5)], 252, 0.0), Err(MetricsError::BelowMinusOne(1, -1.5)));
        assert_eq!(compute(&[Some(0.1)], 0, 0.0), Err(MetricsError::Periods(0)));
        assert_eq!(compute(&[Some(0.1)], 252, f64::NAN), Err(MetricsError::RiskFree));
    }
}
