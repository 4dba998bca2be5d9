//! The stride scheduler: which lane dispatches next.
//!
//! Each lane has a stride, inversely proportional to its weight, and a pass. The eligible
//! lane with the smallest pass goes next (ties to the heavier weight, then to the higher
//! priority) and its pass grows by its stride. A lane's pass starts at its stride, so a
//! burst queued at once drains strictly CRITICAL, HIGH, NORMAL, BULK (the story's AC2),
//! while under sustained load each lane gets dispatches in proportion to its weight, and no
//! lane starves.
//!
//! A lane that could not dispatch (empty, throttled, or every event held) rejoins at the
//! current pass plus its stride: idle time is not saved up as a burst that would lock the
//! other lanes out afterwards.
//!
//! Integer arithmetic: a stride is `2^64 / weight` in a `u128`, exact enough for any `u32`
//! weight and with room for 2^64 dispatches of the lightest lane before the pass overflows.

use crate::config::{Priority, PriorityWeights};

/// The pass one dispatch costs a lane of weight 1.
const STRIDE_ONE: u128 = 1 << 64;

/// Per-lane pass and stride, indexed like [`Priority::ALL`].
#[derive(Debug, Clone)]
pub struct Scheduler {
    /// Pass added per dispatch: [`STRIDE_ONE`] / weight.
    stride: [u128; 4],
    /// The configured weights, for ties.
    weight: [u32; 4],
    /// The pass at which each lane is next due.
    pass: [u128; 4],
    /// Whether the lane was eligible at the previous pick (so has a live pass).
    active: [bool; 4],
    /// The pass of the last lane picked: the scheduler's virtual time.
    now: u128,
}

impl Scheduler {
    /// A scheduler over `weights`, with every lane at its first stride.
    pub fn new(weights: &PriorityWeights) -> Scheduler {
        let weight = Priority::ALL.map(|p| weights.weight(p).get());
        let stride = weight.map(|w| STRIDE_ONE / u128::from(w));
        Scheduler {
            stride,
            weight,
            pass: stride,
            active: [false; 4],
            now: 0,
        }
    }

    /// Picks among the lanes `eligible` marks (indexed like [`Priority::ALL`]) and charges
    /// the chosen one a stride; `None` when no lane is eligible.
    pub fn pick(&mut self, eligible: [bool; 4]) -> Option<Priority> {
        for (lane, eligible) in eligible.iter().enumerate() {
            if !eligible {
                self.active[lane] = false;
            } else if !self.active[lane] {
                self.active[lane] = true;
                self.pass[lane] = self.pass[lane].max(self.now + self.stride[lane]);
            }
        }
        let lane = (0..4).filter(|l| eligible[*l]).min_by(|a, b| {
            self.pass[*a]
                .cmp(&self.pass[*b])
                .then(self.weight[*b].cmp(&self.weight[*a]))
                .then(a.cmp(b))
        })?;
        self.now = self.pass[lane];
        self.pass[lane] += self.stride[lane];
        Some(Priority::ALL[lane])
    }
}

/// The index of `priority` in [`Priority::ALL`].
pub const fn index(priority: Priority) -> usize {
    match priority {
        Priority::Critical => 0,
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Bulk => 3,
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn weights(w: [u32; 4]) -> PriorityWeights {
        let n = |v: u32| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN);
        PriorityWeights {
            critical: n(w[0]),
            high: n(w[1]),
            normal: n(w[2]),
            bulk: n(w[3]),
        }
    }

    /// Dispatches `total` picks with every lane always eligible; returns each lane's count.
    fn sustained(w: [u32; 4], total: usize) -> [usize; 4] {
        let mut scheduler = Scheduler::new(&weights(w));
        let mut counts = [0; 4];
        for _ in 0..total {
            let lane = scheduler.pick([true; 4]).map(index);
            counts[lane.unwrap_or_else(|| panic!("a lane is always eligible"))] += 1;
        }
        counts
    }

    /// Each lane's share is within 5% of its weight's share.
    fn assert_proportional(w: [u32; 4], total: usize) -> [usize; 4] {
        let counts = sustained(w, total);
        let sum: u32 = w.iter().sum();
        for lane in 0..4 {
            #[allow(clippy::cast_precision_loss)]
            let expected = total as f64 * f64::from(w[lane]) / f64::from(sum);
            #[allow(clippy::cast_precision_loss)]
            let got = counts[lane] as f64;
            assert!(
                (got - expected).abs() <= expected * 0.05,
                "lane {lane}: {got} dispatches, expected {expected} ±5% ({counts:?})"
            );
        }
        counts
    }

    #[test]
    fn story_weights_share_dispatches_exactly_by_weight() {
        assert_eq!(
            assert_proportional([1000, 100, 10, 1], 111_100),
            [100_000, 10_000, 1_000, 100]
        );
    }

    #[test]
    fn other_weights_share_dispatches_by_weight() {
        assert_eq!(
            assert_proportional([3, 2, 1, 1], 70_000),
            [30_000, 20_000, 10_000, 10_000]
        );
        assert_proportional([7, 5, 3, 2], 100_001);
    }

    #[test]
    fn a_burst_drains_strictly_by_priority_and_equal_weights_by_priority() {
        let mut scheduler = Scheduler::new(&weights([1000, 100, 10, 1]));
        let first = scheduler.pick([true; 4]);
        assert_eq!(first, Some(Priority::Critical));
        // Equal weights: the tie goes to the higher priority.
        let mut equal = Scheduler::new(&weights([5, 5, 5, 5]));
        let order: Vec<_> = (0..8).filter_map(|_| equal.pick([true; 4])).collect();
        assert_eq!(
            order,
            [
                Priority::Critical,
                Priority::High,
                Priority::Normal,
                Priority::Bulk,
                Priority::Critical,
                Priority::High,
                Priority::Normal,
                Priority::Bulk
            ]
        );
    }

    #[test]
    fn an_idle_lane_does_not_save_up_a_burst() {
        let mut scheduler = Scheduler::new(&weights([2, 1, 1, 1]));
        // HIGH alone for 1000 dispatches; CRITICAL idle.
        for _ in 0..1000 {
            assert_eq!(
                scheduler.pick([false, true, false, false]),
                Some(Priority::High)
            );
        }
        // CRITICAL joins: from now on 2 of every 3 dispatches, not 2000 in a row.
        let order: Vec<_> = (0..6)
            .filter_map(|_| scheduler.pick([true, true, false, false]))
            .collect();
        let critical = order.iter().filter(|p| **p == Priority::Critical).count();
        assert_eq!(critical, 4, "{order:?}");
    }

    #[test]
    fn nothing_eligible_picks_nothing() {
        let mut scheduler = Scheduler::new(&weights([1, 1, 1, 1]));
        assert_eq!(scheduler.pick([false; 4]), None);
    }
}
