//! A timer table (spec §6): one optional deadline per timer kind.

use crate::time::SimTime;

/// A kind of timer; `index` is below the table size.
pub(crate) trait TimerKind: Copy + std::fmt::Debug + 'static {
    /// Every kind, in index order.
    const ALL: &'static [Self];
    /// The table slot.
    fn index(self) -> usize;
}

/// Deadlines indexed by timer kind. No timer is `None`.
#[derive(Clone, Debug)]
pub(crate) struct TimerTable<T, const N: usize> {
    at: [Option<SimTime>; N],
    _kind: std::marker::PhantomData<T>,
}

impl<T: TimerKind, const N: usize> TimerTable<T, N> {
    pub(crate) fn new() -> Self {
        TimerTable {
            at: [None; N],
            _kind: std::marker::PhantomData,
        }
    }

    pub(crate) fn set(&mut self, kind: T, at: SimTime) {
        self.at[kind.index()] = Some(at);
    }

    pub(crate) fn stop(&mut self, kind: T) {
        self.at[kind.index()] = None;
    }

    pub(crate) fn stop_all(&mut self) {
        self.at = [None; N];
    }

    pub(crate) fn get(&self, kind: T) -> Option<SimTime> {
        self.at[kind.index()]
    }

    /// The earliest deadline and its kind.
    pub(crate) fn next(&self) -> Option<(T, SimTime)> {
        T::ALL
            .iter()
            .filter_map(|&k| self.get(k).map(|t| (k, t)))
            .min_by_key(|&(_, t)| t)
    }

    /// Clears and returns the earliest timer that has expired at `now`,
    /// with the deadline it had.
    pub(crate) fn pop_expired(&mut self, now: SimTime) -> Option<(T, SimTime)> {
        let (kind, at) = self.next().filter(|&(_, at)| at <= now)?;
        self.stop(kind);
        Some((kind, at))
    }
}
