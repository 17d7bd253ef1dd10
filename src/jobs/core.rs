//! Pure job bookkeeping (the jobs themselves are in the registry, src/schedule.rs).

/// A worker is alive when its heartbeat is recent: three naptimes, and never less than 30 s.
pub fn heartbeat_fresh(age_s: f64, naptime_s: i32) -> bool {
    age_s.is_finite() && age_s >= 0.0 && age_s <= (3.0 * naptime_s.max(1) as f64).max(30.0)
}

/// Shortens an error message for a job_runs row (never more than 2000 characters).
pub fn clip(msg: &str) -> String {
    if msg.chars().count() <= 2000 {
        msg.to_string()
    } else {
        let mut s: String = msg.chars().take(1997).collect();
        s.push_str("...");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_freshness() {
        assert!(heartbeat_fresh(5.0, 10));
        assert!(heartbeat_fresh(29.0, 1));
        assert!(!heartbeat_fresh(31.0, 10));
        assert!(heartbeat_fresh(59.0, 20));
        assert!(!heartbeat_fresh(f64::NAN, 10));
        assert!(!heartbeat_fresh(-1.0, 10));
    }

    #[test]
    fn clip_keeps_short_and_cuts_long() {
        assert_eq!(clip("abc"), "abc");
        let long = "é".repeat(3000);
        let c = clip(&long);
        assert_eq!(c.chars().count(), 2000);
        assert!(c.ends_with("..."));
    }
}
