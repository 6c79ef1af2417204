//! The processes of a run as the training loop sees them: one, or the ranks of a
//! data-parallel group. This is the only part of the loop that names the process group.
//!
//! Every rank decides from the same numbers. Before each update one all-reduce
//! ([`Ranks::agree`]) carries each rank's stop flags (any rank's time budget or signal stops
//! all: clocks and signals differ between ranks) and rank 0's clock (the time budget's decay).
//! The update's loss and gradient norm are those after the gradients' all-reduce, the same on
//! every rank. What only rank 0 computes (its model directory, its validation) reaches the
//! others through [`Ranks::rank0_decides`]: its value, or its divergence or interruption as
//! the same error on every rank, or any other error as "rank 0 stopped: ...". In a single
//! process each of these is the identity.
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tch::Tensor;

use crate::distributed::ProcessGroup;
use crate::error::{Error, Result};

/// One process, or this rank of a data-parallel group.
#[derive(Clone, Copy)]
pub(super) enum Ranks<'a> {
    One,
    Group(&'a ProcessGroup),
}

/// What every rank agreed on before an update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Agreement {
    /// Some rank's time budget is spent.
    pub time_up: bool,
    /// Some rank was interrupted (Ctrl-C, SIGTERM).
    pub interrupted: bool,
    /// The fraction of the time budget used, by rank 0's clock.
    pub progress: Option<f64>,
}

/// Rank 0's outcome as it travels to the other ranks.
#[derive(Serialize, Deserialize)]
enum Decided<T> {
    Value(T),
    Interrupted,
    /// [`Error::NonFinite`], the value as bits (JSON has no NaN).
    Diverged {
        step: u64,
        what: String,
        value: u64,
    },
}

impl<'a> Ranks<'a> {
    pub(super) fn new(group: Option<&'a ProcessGroup>) -> Self {
        group.map_or(Ranks::One, Ranks::Group)
    }

    pub(super) fn rank(&self) -> usize {
        match self {
            Ranks::One => 0,
            Ranks::Group(g) => g.rank(),
        }
    }

    pub(super) fn world_size(&self) -> usize {
        match self {
            Ranks::One => 1,
            Ranks::Group(g) => g.world_size(),
        }
    }

    pub(super) fn is_group(&self) -> bool {
        matches!(self, Ranks::Group(_))
    }

    /// Whether this process writes the model directory (rank 0, or a single process).
    pub(super) fn is_writer(&self) -> bool {
        self.rank() == 0
    }

    /// One decision for all ranks before an update, from one all-reduce: each rank's flags,
    /// and `progress`, the time budget's fraction, of rank 0 (only rank 0 adds its clock,
    /// the others 0, so the sum is rank 0's value exactly; -1 stands for none).
    pub(super) fn agree(
        &self,
        time_up: bool,
        interrupted: bool,
        progress: Option<f64>,
    ) -> Result<Agreement> {
        let Ranks::Group(g) = self else {
            return Ok(Agreement {
                time_up,
                interrupted,
                progress,
            });
        };
        let clock = if g.rank() == 0 {
            progress.unwrap_or(-1.0)
        } else {
            0.0
        };
        let sum = g.sum_f64(&[time_up as u8 as f64, interrupted as u8 as f64, clock])?;
        Ok(Agreement {
            time_up: sum[0] > 0.0,
            interrupted: sum[1] > 0.0,
            progress: (sum[2] >= 0.0).then_some(sum[2]),
        })
    }

    /// Rank 0 runs `decide`; its outcome reaches every rank (see the module docs). Rank 0's
    /// own error comes back to it as it was.
    pub(super) fn rank0_decides<T: Serialize + DeserializeOwned>(
        &self,
        decide: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let Ranks::Group(g) = self else {
            return decide();
        };
        if g.rank() != 0 {
            let bytes = g.from_rank0(Err(String::new()))?;
            let decided: Decided<T> = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Distributed(format!("rank 0's decision: {e}")))?;
            return match decided {
                Decided::Value(v) => Ok(v),
                Decided::Interrupted => Err(Error::Interrupted),
                Decided::Diverged { step, what, value } => Err(Error::NonFinite {
                    step,
                    what,
                    value: f64::from_bits(value),
                }),
            };
        }
        let mine = decide();
        let sent = match &mine {
            Ok(v) => Ok(Decided::Value(v)),
            Err(Error::Interrupted) => Ok(Decided::Interrupted),
            Err(Error::NonFinite { step, what, value }) => Ok(Decided::Diverged {
                step: *step,
                what: what.clone(),
                value: value.to_bits(),
            }),
            Err(e) => Err(error_chain(e)),
        }
        .and_then(|d| serde_json::to_vec(&d).map_err(|e| format!("encoding a decision: {e}")));
        let shared = g.from_rank0(sent);
        let v = mine?;
        shared?;
        Ok(v)
    }

    /// Rank 0's `sent` on every rank (the others' is ignored): its value, or its message as
    /// "rank 0 stopped: ..." (for what every rank computed, rank 0's result deciding).
    pub(super) fn rank0_sends<T: Serialize + DeserializeOwned>(
        &self,
        sent: std::result::Result<T, String>,
    ) -> Result<T> {
        let Ranks::Group(g) = self else {
            return sent.map_err(Error::Distributed);
        };
        let bytes = g.from_rank0(sent.and_then(|v| {
            serde_json::to_vec(&v).map_err(|e| format!("encoding rank 0's state: {e}"))
        }))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Distributed(format!("rank 0's state: {e}")))
    }

    /// Whether `flag` is set on any rank.
    pub(super) fn any(&self, flag: bool) -> Result<bool> {
        match self {
            Ranks::One => Ok(flag),
            Ranks::Group(g) => Ok(g.any(&[flag])?[0]),
        }
    }

    /// Sums `tensors` over the ranks, in place.
    pub(super) fn sum(&self, tensors: &[Tensor]) -> Result<()> {
        match self {
            Ranks::One => Ok(()),
            Ranks::Group(g) => g.all_reduce_sum(tensors),
        }
    }

    /// Rank 0's `tensors` into every rank's, in place.
    pub(super) fn broadcast_from_rank0(&self, tensors: &[Tensor]) -> Result<()> {
        match self {
            Ranks::One => Ok(()),
            Ranks::Group(g) => g.broadcast(tensors, 0),
        }
    }
}

/// `e` and its causes on one line, as rank 0 reports them to the other ranks.
pub(super) fn error_chain(e: &Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        let first = text.lines().next().unwrap_or("").to_string();
        if parts.last() != Some(&first) {
            parts.push(first);
        }
        cause = c.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_decides_alone() {
        let one = Ranks::One;
        assert_eq!((one.rank(), one.world_size()), (0, 1));
        assert!(one.is_writer() && !one.is_group());
        let a = one.agree(true, false, Some(0.5)).unwrap();
        assert_eq!(
            a,
            Agreement {
                time_up: true,
                interrupted: false,
                progress: Some(0.5)
            }
        );
        assert_eq!(one.rank0_decides(|| Ok(7)).unwrap(), 7);
        let e = one
            .rank0_decides(|| -> Result<u8> {
                Err(Error::NonFinite {
                    step: 3,
                    what: "loss".into(),
                    value: f64::NAN,
                })
            })
            .unwrap_err();
        assert!(matches!(e, Error::NonFinite { step: 3, .. }), "{e}");
        assert!(one.any(true).unwrap() && !one.any(false).unwrap());
    }

    #[test]
    fn a_decision_travels_with_its_divergence_intact() {
        let d: Decided<u8> = Decided::Diverged {
            step: 5,
            what: "validation loss".into(),
            value: f64::INFINITY.to_bits(),
        };
        let back: Decided<u8> = serde_json::from_slice(&serde_json::to_vec(&d).unwrap()).unwrap();
        let Decided::Diverged { step, what, value } = back else {
            panic!("not a divergence");
        };
        assert_eq!((step, what.as_str()), (5, "validation loss"));
        assert_eq!(f64::from_bits(value), f64::INFINITY);
    }
}
