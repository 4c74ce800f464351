//! Loss models with the kernel's integer arithmetic (`sch_netem.c`:
//! `loss_event`, `loss_gilb_ell`, `loss_4state`, `get_crandom`).

use rand::RngCore;
use rand_chacha::ChaCha20Rng;

use crate::config::LossConfig;
use crate::decision::LossCause;

/// tc's `get_percent`: `rint(p × UINT32_MAX)` (C `rint` rounds ties to even).
pub(crate) fn threshold(p: f64) -> u32 {
    (p * u32::MAX as f64).round_ties_even() as u32
}

/// netem's i.i.d. event test: fires when `threshold >= rnd`, never for a zero
/// threshold (the kernel tests `q->x && q->x >= rnd`, drawing nothing for 0).
pub(crate) fn fires(thr: u32, rng: &mut ChaCha20Rng) -> bool {
    thr != 0 && thr >= rng.next_u32()
}

/// The kernel's correlated random state (`struct crndstate`).
#[derive(Clone, Debug)]
pub(crate) struct Crandom {
    rho: u32,
    last: u32,
}

impl Crandom {
    /// `init_crandom`: the kernel seeds `last` from the unseeded RNG; we
    /// take it from the stream so that runs are reproducible.
    pub(crate) fn new(correlation: f64, first: u32) -> Self {
        Crandom {
            rho: threshold(correlation),
            last: first,
        }
    }

    /// `get_crandom`: `answer = (value·(2^32 − ρ) + last·ρ) >> 32` with
    /// `ρ = rho + 1`. Both products fit: the sum is below 2^64.
    pub(crate) fn next(&mut self, value: u32) -> u32 {
        if self.rho == 0 {
            return value;
        }
        let rho = self.rho as u64 + 1;
        let answer = ((value as u64) * ((1u64 << 32) - rho) + (self.last as u64) * rho) >> 32;
        self.last = answer as u32;
        self.last
    }
}

/// A loss model with thresholds resolved to the kernel's u32 form.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum LossModel {
    Random {
        thr: u32,
    },
    NetemCompat {
        thr: u32,
        correlation: f64,
    },
    /// `a1 = p`, `a2 = r`, `a3 = h = UINT32_MAX − (1−h)`, `a4 = 1−k`.
    GilbertElliott {
        a1: u32,
        a2: u32,
        a3: u32,
        a4: u32,
        burst: bool,
    },
    /// `a1 = p13`, `a2 = p31`, `a3 = p32`, `a4 = p14`, `a5 = p23`.
    FourState {
        a1: u32,
        a2: u32,
        a3: u32,
        a4: u32,
        a5: u32,
    },
}

impl LossModel {
    /// Resolves a validated config, applying tc's defaults.
    pub(crate) fn from_config(c: &LossConfig) -> Self {
        match *c {
            LossConfig::Random { probability } => LossModel::Random {
                thr: threshold(probability),
            },
            LossConfig::NetemCompat {
                probability,
                correlation,
            } => LossModel::NetemCompat {
                thr: threshold(probability),
                correlation,
            },
            LossConfig::GilbertElliott {
                p,
                r,
                one_minus_h,
                one_minus_k,
            } => LossModel::GilbertElliott {
                a1: threshold(p),
                a2: threshold(r.unwrap_or(1.0 - p)),
                a3: u32::MAX - threshold(one_minus_h.unwrap_or(1.0)),
                a4: threshold(one_minus_k.unwrap_or(0.0)),
                burst: false,
            },
            LossConfig::Burst {
                loss_rate,
                mean_burst_len,
            } => {
                let r = 1.0 / mean_burst_len;
                let p = (r * loss_rate / (1.0 - loss_rate)).min(1.0);
                LossModel::GilbertElliott {
                    a1: threshold(p),
                    a2: threshold(r),
                    a3: 0,
                    a4: 0,
                    burst: true,
                }
            }
            LossConfig::FourState {
                p13,
                p31,
                p32,
                p23,
                p14,
            } => LossModel::FourState {
                a1: threshold(p13),
                a2: threshold(p31.unwrap_or(1.0 - p13)),
                a3: threshold(p32.unwrap_or(0.0)),
                a4: threshold(p14.unwrap_or(0.0)),
                a5: threshold(p23.unwrap_or(1.0)),
            },
        }
    }

    fn kind(&self) -> u8 {
        match self {
            LossModel::Random { .. } => 0,
            LossModel::NetemCompat { .. } => 1,
            LossModel::GilbertElliott { burst: false, .. } => 2,
            LossModel::GilbertElliott { burst: true, .. } => 3,
            LossModel::FourState { .. } => 4,
        }
    }
}

/// GE states.
const GOOD: u8 = 1;
const BAD: u8 = 2;
/// 4-state states (netem.md §3.4).
const TX_IN_GAP: u8 = 1;
const TX_IN_BURST: u8 = 2;
const LOST_IN_BURST: u8 = 3;
const LOST_IN_GAP: u8 = 4;

/// The mutable state of a loss model.
#[derive(Clone, Debug)]
pub(crate) struct LossState {
    model: LossModel,
    /// Markov chain state (GE: GOOD/BAD; 4-state: 1..=4).
    state: u8,
    /// netem_compat correlation state for originals and for copies.
    cor: Option<(Crandom, Crandom)>,
}

impl LossState {
    pub(crate) fn new(model: LossModel, rng: &mut ChaCha20Rng, copy_rng: &mut ChaCha20Rng) -> Self {
        let cor = match model {
            LossModel::NetemCompat { correlation, .. } => Some((
                Crandom::new(correlation, rng.next_u32()),
                Crandom::new(correlation, copy_rng.next_u32()),
            )),
            _ => None,
        };
        LossState {
            model,
            state: 1,
            cor,
        }
    }

    /// Replaces the model. The chain keeps its state when the model kind is
    /// unchanged; a different kind starts in Good / gap (as the kernel does
    /// on any `tc change` of the loss model).
    pub(crate) fn reconfigure(
        &mut self,
        model: LossModel,
        rng: &mut ChaCha20Rng,
        copy_rng: &mut ChaCha20Rng,
    ) {
        if model.kind() != self.model.kind() {
            *self = LossState::new(model, rng, copy_rng);
        } else {
            if let (LossModel::NetemCompat { correlation, .. }, Some((a, b))) =
                (&model, &mut self.cor)
            {
                a.rho = threshold(*correlation);
                b.rho = threshold(*correlation);
            }
            self.model = model;
        }
    }

    /// netem_compat: `q->loss && q->loss >= get_crandom(...)`, on the
    /// originals' correlation state or, for a duplicate, the copies' own.
    fn compat_draw(&mut self, thr: u32, copy: bool, rng: &mut ChaCha20Rng) -> Option<LossCause> {
        if thr == 0 {
            return None;
        }
        let states = self
            .cor
            .as_mut()
            .expect("netem_compat always has a correlation state");
        let cor = if copy { &mut states.1 } else { &mut states.0 };
        (thr >= cor.next(rng.next_u32())).then_some(LossCause::NetemCompat)
    }

    /// The loss decision for an original packet: advances the chain exactly
    /// as the kernel does.
    pub(crate) fn decide(&mut self, rng: &mut ChaCha20Rng) -> Option<LossCause> {
        match self.model {
            LossModel::Random { thr } => fires(thr, rng).then_some(LossCause::Random),
            LossModel::NetemCompat { thr, .. } => self.compat_draw(thr, false, rng),
            LossModel::GilbertElliott {
                a1,
                a2,
                a3,
                a4,
                burst,
            } => {
                // loss_gilb_ell: transition draw, then loss draw tested
                // against the state the packet arrived in.
                let arrived_bad = self.state == BAD;
                let lost = if arrived_bad {
                    if rng.next_u32() < a2 {
                        self.state = GOOD;
                    }
                    rng.next_u32() > a3
                } else {
                    if rng.next_u32() < a1 {
                        self.state = BAD;
                    }
                    rng.next_u32() < a4
                };
                lost.then_some(ge_cause(burst, arrived_bad))
            }
            LossModel::FourState { .. } => {
                let (next, lost) = self.four_state_step(rng.next_u32());
                self.state = next;
                lost.then_some(LossCause::FourState { state: next })
            }
        }
    }

    /// The loss decision for a duplicate copy: evaluated in the chain's
    /// current state with the copy's own stream, without moving the chain,
    /// so that duplication never changes the originals' loss decisions.
    pub(crate) fn decide_copy(&mut self, rng: &mut ChaCha20Rng) -> Option<LossCause> {
        match self.model {
            LossModel::Random { thr } => fires(thr, rng).then_some(LossCause::Random),
            LossModel::NetemCompat { thr, .. } => self.compat_draw(thr, true, rng),
            LossModel::GilbertElliott { a3, a4, burst, .. } => {
                let bad = self.state == BAD;
                let lost = if bad {
                    rng.next_u32() > a3
                } else {
                    rng.next_u32() < a4
                };
                lost.then_some(ge_cause(burst, bad))
            }
            LossModel::FourState { .. } => {
                let (next, lost) = self.four_state_step(rng.next_u32());
                lost.then_some(LossCause::FourState { state: next })
            }
        }
    }

    /// `loss_4state` for one draw: (new state, lost). u32 sums wrap as in C.
    fn four_state_step(&self, rnd: u32) -> (u8, bool) {
        let LossModel::FourState { a1, a2, a3, a4, a5 } = self.model else {
            unreachable!("four_state_step is only called for the 4-state model")
        };
        match self.state {
            TX_IN_GAP => {
                if rnd < a4 {
                    (LOST_IN_GAP, true)
                } else if a4 < rnd && rnd < a1.wrapping_add(a4) {
                    (LOST_IN_BURST, true)
                } else {
                    // `a1 + a4 < rnd` → gap; the kernel leaves the state
                    // unchanged on the boundary values too.
                    (TX_IN_GAP, false)
                }
            }
            TX_IN_BURST => {
                if rnd < a5 {
                    (LOST_IN_BURST, true)
                } else {
                    (TX_IN_BURST, false)
                }
            }
            LOST_IN_BURST => {
                if rnd < a3 {
                    (TX_IN_BURST, false)
                } else if a2.wrapping_add(a3) > rnd && rnd >= a3 {
                    (TX_IN_GAP, false)
                } else {
                    (LOST_IN_BURST, true)
                }
            }
            _ => (TX_IN_GAP, false),
        }
    }
}

fn ge_cause(burst: bool, bad: bool) -> LossCause {
    if burst {
        LossCause::Burst { bad }
    } else {
        LossCause::GilbertElliott { bad }
    }
}

/// Effective loss rate and mean burst length of netem's correlated random
/// loss `loss P C`, from a deterministic simulation of `get_crandom` with the
/// kernel's integer arithmetic over 2^22 packets (SplitMix64 noise, fixed
/// seed). Rates below about 1e-6 are therefore reported as 0 or with few
/// events behind them.
pub(crate) fn netem_compat_effective(probability: f64, correlation: f64) -> (f64, f64) {
    const N: u64 = 1 << 22;
    let thr = threshold(probability);
    if thr == 0 {
        return (0.0, 0.0);
    }
    let mut sm = 0x5EED_0FC0_77E1_A7E5_u64;
    let mut next = move || {
        // SplitMix64.
        sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = sm;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 32) as u32
    };
    let mut cor = Crandom::new(correlation, next());
    // Let the recurrence forget its start.
    for _ in 0..1000 {
        cor.next(next());
    }
    let (mut lost, mut bursts, mut in_burst) = (0u64, 0u64, false);
    for _ in 0..N {
        let l = thr >= cor.next(next());
        if l {
            lost += 1;
            if !in_burst {
                bursts += 1;
            }
        }
        in_burst = l;
    }
    let burst = if bursts == 0 {
        0.0
    } else {
        lost as f64 / bursts as f64
    };
    (lost as f64 / N as f64, burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_match_tc() {
        assert_eq!(threshold(0.0), 0);
        assert_eq!(threshold(1.0), u32::MAX);
        // rint(0.5 × 4294967295) = rint(2147483647.5) = 2147483648 (ties to even).
        assert_eq!(threshold(0.5), 2_147_483_648);
    }

    #[test]
    fn crandom_without_correlation_is_the_raw_draw() {
        let mut c = Crandom::new(0.0, 7);
        assert_eq!(c.next(12345), 12345);
        // Full correlation: ρ = 2^32, answer = last forever.
        let mut c = Crandom::new(1.0, 7);
        assert_eq!(c.next(12345), 7);
    }
}
