//! `quantops.backtest_metrics(returns, periods_per_year, risk_free)`: the metrics of a return
//! series, computed in Rust so that flows, agents and SQL compute them the same way.

use super::core::{self as metrics, MetricsError};
use crate::error::SqlError;
use crate::sql_error;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

impl SqlError for MetricsError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            MetricsError::Null(_) => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            _ => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        }
    }
}
sql_error!(MetricsError);

/// Sharpe, sortino, max drawdown, CAGR, volatility, hit rate and total return of periodic simple
/// returns (see src/backtest/core.rs for the exact definitions).
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn backtest_metrics(
    returns: Option<Vec<Option<f64>>>,
    periods_per_year: default!(Option<i32>, "252"),
    risk_free: default!(Option<f64>, "0"),
) -> Result<
    TableIterator<
        'static,
        (
            name!(n, i32),
            name!(sharpe, Option<f64>),
            name!(sortino, Option<f64>),
            name!(max_drawdown, f64),
            name!(cagr, f64),
            name!(volatility, Option<f64>),
            name!(hit_rate, f64),
            name!(total_return, f64),
        ),
    >,
    ErrorReport,
> {
    let returns = returns
        .ok_or(MetricsError::Null(0))
        .map_err(|_| ErrorReport::new(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "returns must not be null", "quantops"))?;
    let m = metrics::compute(&returns, periods_per_year.unwrap_or(252), risk_free.unwrap_or(0.0))?;
    Ok(TableIterator::once((m.n as i32, m.sharpe, m.sortino, m.max_drawdown, m.cagr, m.volatility, m.hit_rate, m.total_return)))
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.backtest_metrics(double precision[], integer, double precision)', 'authenticated');",
    name = "grant_backtest_metrics",
    requires = [backtest_metrics]
);

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn metrics_from_sql() {
        let (n, mdd): (Option<i32>, Option<f64>) =
            Spi::get_two("select n, max_drawdown from quantops.backtest_metrics(array[0.1, -0.5, 0.2])").unwrap();
        assert_eq!(n, Some(3));
        assert!((mdd.unwrap() - 0.5).abs() < 1e-12);
    }

    #[pg_test(error = "returns[2] is not a finite number")]
    fn metrics_refuse_nan() {
        Spi::run("select * from quantops.backtest_metrics(array[0.1, 'NaN'::float8])").unwrap();
    }
}
