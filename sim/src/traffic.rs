//! Request arrivals: Poisson, diurnal, flash crowds, or the replay of a real trace.

use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution, Exp, LogNormal, Zipf};

use crate::behaviour::RequestTokens;
use crate::prompt::Prompt;
use crate::trace::Trace;
use augur_engine::shedding::Priority;

/// A burst of extra traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spike {
    /// When it starts, from the start of the run.
    pub start: Duration,
    /// How long it lasts.
    pub duration: Duration,
    /// Rate multiplier at its height.
    pub multiplier: f64,
    /// How long the rate takes to climb from the base to its height (zero: a step). Real crowds
    /// build over tens of seconds to minutes, which is what gives a forecaster its warning.
    pub ramp: Duration,
}

impl Spike {
    /// The rate multiplier at `t`: 1 outside the spike, rising linearly over the ramp.
    fn multiplier_at(&self, t: Duration) -> f64 {
        if t < self.start || t >= self.start + self.duration {
            return 1.0;
        }
        let climbed = if self.ramp.is_zero() {
            1.0
        } else {
            ((t - self.start).as_secs_f64() / self.ramp.as_secs_f64()).min(1.0)
        };
        1.0 + (self.multiplier - 1.0) * climbed
    }
}

/// How requests arrive.
#[derive(Debug, Clone, PartialEq)]
pub enum Traffic {
    /// A homogeneous Poisson process of `rate` requests per second.
    Poisson {
        /// Requests per second.
        rate: f64,
    },
    /// Poisson with a sinusoidal rate: `mean_rate * (1 + amplitude * sin(2 pi t / period))`.
    Diurnal {
        /// Mean requests per second.
        mean_rate: f64,
        /// Relative swing, 0 to 1.
        amplitude: f64,
        /// Length of one cycle.
        period: Duration,
    },
    /// Poisson at `base_rate`, multiplied during spikes.
    FlashCrowd {
        /// Requests per second outside spikes.
        base_rate: f64,
        /// The spikes.
        spikes: Vec<Spike>,
    },
    /// The arrivals (and sizes, where the trace has them) of a real trace.
    Replay(Trace),
}

/// Sizes of synthetic requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sizes {
    /// Every request the same.
    Fixed(RequestTokens),
    /// Log-normal prompt and output lengths.
    LogNormal {
        /// Median prompt tokens.
        prompt_median: f64,
        /// Median output tokens.
        output_median: f64,
        /// Shape of both.
        sigma: f64,
    },
}

impl Sizes {
    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> RequestTokens {
        match *self {
            Self::Fixed(size) => size,
            Self::LogNormal {
                prompt_median,
                output_median,
                sigma,
            } => {
                let draw = |median: f64, rng: &mut R| {
                    LogNormal::new(median.ln(), sigma)
                        .map_or(median, |d| d.sample(rng))
                        .round()
                        .max(1.0) as u32
                };
                RequestTokens {
                    prompt_tokens: draw(prompt_median, rng),
                    output_tokens: draw(output_median, rng),
                }
            }
        }
    }
}

/// One arriving request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Arrival {
    /// Arrival time, from the start of the run.
    pub at: Duration,
    /// Its size.
    pub size: RequestTokens,
    /// Its prompt (LLM requests; [`Prompt::Unique`] where none is shared).
    pub prompt: Prompt,
    /// The LoRA adapter it asks for; `None` for the base model.
    pub adapter: Option<u16>,
    /// Its priority where the pool sheds.
    pub priority: Priority,
}

impl Traffic {
    /// The rate at `t`, in requests per second (for a trace: its average).
    pub fn rate_at(&self, t: Duration) -> f64 {
        match self {
            Self::Poisson { rate } => *rate,
            Self::Diurnal {
                mean_rate,
                amplitude,
                period,
            } => {
                let phase = std::f64::consts::TAU * t.as_secs_f64() / period.as_secs_f64();
                mean_rate * (1.0 + amplitude * phase.sin())
            }
            Self::FlashCrowd { base_rate, spikes } => {
                base_rate * spikes.iter().map(|s| s.multiplier_at(t)).fold(1.0, f64::max)
            }
            Self::Replay(trace) => trace.len() as f64 / trace.span().as_secs_f64().max(1.0),
        }
    }

    fn peak_rate(&self) -> f64 {
        match self {
            Self::Poisson { rate } => *rate,
            Self::Diurnal {
                mean_rate, amplitude, ..
            } => mean_rate * (1.0 + amplitude),
            Self::FlashCrowd { base_rate, spikes } => {
                base_rate * spikes.iter().map(|s| s.multiplier).fold(1.0, f64::max)
            }
            Self::Replay(_) => 0.0,
        }
    }

    /// Arrivals within `duration` counted into buckets of `bucket_s` seconds (the last partial
    /// bucket dropped): the demand history a proxy would count.
    pub fn per_bucket<R: Rng + ?Sized>(
        &self,
        duration: Duration,
        bucket_s: u32,
        sizes: &Sizes,
        rng: &mut R,
    ) -> Vec<f64> {
        let bucket_s = u64::from(bucket_s.max(1));
        let mut buckets = vec![0.0; (duration.as_secs() / bucket_s) as usize];
        for a in self.arrivals(duration, sizes, rng) {
            if let Some(b) = buckets.get_mut((a.at.as_secs() / bucket_s) as usize) {
                *b += 1.0;
            }
        }
        buckets
    }

    /// Every arrival within `duration` (a trace: all of it up to `duration`), in time order.
    /// Non-homogeneous processes are drawn by thinning a Poisson process at the peak rate.
    pub fn arrivals<R: Rng + ?Sized>(&self, duration: Duration, sizes: &Sizes, rng: &mut R) -> Vec<Arrival> {
        if let Self::Replay(trace) = self {
            return trace
                .offsets
                .iter()
                .zip(&trace.sizes)
                .take_while(|(at, _)| **at <= duration)
                .map(|(&at, size)| Arrival {
                    at,
                    size: size.unwrap_or_else(|| sizes.sample(rng)),
                    ..Arrival::default()
                })
                .collect();
        }
        let peak = self.peak_rate();
        let Ok(gap) = Exp::new(peak) else {
            return Vec::new();
        };
        let mut arrivals = Vec::with_capacity((peak * duration.as_secs_f64() * 1.1) as usize);
        let mut t = 0.0;
        let end = duration.as_secs_f64();
        loop {
            t += gap.sample(rng);
            if t >= end {
                return arrivals;
            }
            let at = Duration::from_secs_f64(t);
            if rng.random::<f64>() * peak <= self.rate_at(at) {
                arrivals.push(Arrival {
                    at,
                    size: sizes.sample(rng),
                    ..Arrival::default()
                });
            }
        }
    }
}

/// How a scenario's requests' prompts are drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Prompts {
    /// Every prompt unique (its length from the scenario's sizes).
    #[default]
    Unique,
    /// Many tenants, each with one long document that every one of its requests starts with, as in
    /// llm-d's prefix-cache benchmark; tenants equally likely.
    Documents {
        /// Tenants.
        tenants: u32,
        /// Each document's length.
        document_tokens: u32,
        /// Median question length (log-normal, sigma 0.5).
        question_tokens: f64,
    },
    /// Chat sessions whose prompts grow turn by turn: `active` sessions at a time, each request the
    /// next turn of one of them (at random), a session replaced by a new one after `turns` turns.
    Sessions {
        /// Sessions going on at once.
        active: u32,
        /// Turns per session.
        turns: u16,
        /// Each session's system message.
        system_tokens: u16,
        /// Mean length of a question or an answer.
        message_tokens: u16,
    },
}

/// Which LoRA adapters a scenario's requests ask for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adapters {
    /// Adapters, named `lora-0` to `lora-{count - 1}`.
    pub count: u16,
    /// Zipf exponent of their popularity (0: equally popular).
    pub skew: f64,
}

impl Prompts {
    /// Gives each arrival its prompt (and its prompt length) and adapter.
    pub fn assign<R: Rng + ?Sized>(&self, adapters: Option<Adapters>, arrivals: &mut [Arrival], rng: &mut R) {
        let popularity = adapters.and_then(|a| Zipf::new(f64::from(a.count.max(1)), a.skew).ok());
        let question = LogNormal::new(0.0, 0.5).expect("valid shape");
        let mut sessions: Vec<(u32, u16)> = match *self {
            Self::Sessions { active, .. } => (0..active).map(|s| (s, 0)).collect(),
            _ => Vec::new(),
        };
        let mut next_session = sessions.len() as u32;
        for arrival in arrivals.iter_mut() {
            arrival.adapter = popularity.map(|z| z.sample(rng) as u16 - 1);
            arrival.prompt = match *self {
                Self::Unique => continue,
                Self::Documents {
                    tenants,
                    document_tokens,
                    question_tokens,
                } => Prompt::Document {
                    tenant: rng.random_range(0..tenants.max(1)),
                    document_tokens,
                    question: rng.random(),
                    question_tokens: (question_tokens * question.sample(rng)).round().max(1.0) as u32,
                },
                Self::Sessions {
                    turns,
                    system_tokens,
                    message_tokens,
                    ..
                } => {
                    let slot = rng.random_range(0..sessions.len().max(1));
                    let Some((session, turn)) = sessions.get_mut(slot) else {
                        continue;
                    };
                    let prompt = Prompt::Turn {
                        session: *session,
                        turn: *turn,
                        system_tokens,
                        message_tokens,
                    };
                    *turn += 1;
                    if *turn >= turns {
                        (*session, *turn) = (next_session, 0);
                        next_session += 1;
                    }
                    prompt
                }
            };
            arrival.size.prompt_tokens = arrival.prompt.tokens();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const FIXED: Sizes = Sizes::Fixed(RequestTokens {
        prompt_tokens: 1,
        output_tokens: 1,
    });

    #[test]
    fn poisson_has_its_rate() {
        let arrivals = Traffic::Poisson { rate: 500.0 }.arrivals(
            Duration::from_secs(100),
            &FIXED,
            &mut SmallRng::seed_from_u64(1),
        );
        assert!(
            (arrivals.len() as f64 / 50_000.0 - 1.0).abs() < 0.02,
            "{}",
            arrivals.len()
        );
        assert!(arrivals.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn a_flash_crowd_multiplies_the_rate_inside_its_spike_only() {
        let spike = Spike {
            start: Duration::from_secs(40),
            duration: Duration::from_secs(20),
            multiplier: 4.0,
            ramp: Duration::ZERO,
        };
        let traffic = Traffic::FlashCrowd {
            base_rate: 200.0,
            spikes: vec![spike],
        };
        let arrivals = traffic.arrivals(Duration::from_secs(100), &FIXED, &mut SmallRng::seed_from_u64(2));
        let count = |from: u64, to: u64| {
            arrivals
                .iter()
                .filter(|a| a.at >= Duration::from_secs(from) && a.at < Duration::from_secs(to))
                .count() as f64
        };
        assert!((count(40, 60) / 20.0 / 800.0 - 1.0).abs() < 0.05);
        assert!((count(0, 40) / 40.0 / 200.0 - 1.0).abs() < 0.05);
    }

    #[test]
    fn diurnal_swings_around_its_mean() {
        let traffic = Traffic::Diurnal {
            mean_rate: 300.0,
            amplitude: 0.5,
            period: Duration::from_secs(100),
        };
        let arrivals = traffic.arrivals(Duration::from_secs(100), &FIXED, &mut SmallRng::seed_from_u64(3));
        let first_half = arrivals.iter().filter(|a| a.at < Duration::from_secs(50)).count() as f64;
        let second_half = arrivals.len() as f64 - first_half;
        // Integral of the sine over each half: mean +/- amplitude * 2 / pi.
        assert!(
            (first_half / second_half
                - (1.0 + 1.0 / std::f64::consts::PI) / (1.0 - 1.0 / std::f64::consts::PI))
                .abs()
                < 0.1
        );
    }

    #[test]
    fn sessions_take_their_turns_in_order() {
        let mut arrivals = vec![Arrival::default(); 400];
        let prompts = Prompts::Sessions {
            active: 4,
            turns: 5,
            system_tokens: 10,
            message_tokens: 10,
        };
        prompts.assign(None, &mut arrivals, &mut SmallRng::seed_from_u64(1));
        let mut next = std::collections::HashMap::new();
        for a in &arrivals {
            let Prompt::Turn { session, turn, .. } = a.prompt else {
                panic!("not a turn: {:?}", a.prompt)
            };
            assert_eq!(turn, *next.get(&session).unwrap_or(&0));
            next.insert(session, turn + 1);
            assert_eq!(a.size.prompt_tokens, a.prompt.tokens());
        }
        assert!(next.len() >= 400 / 5, "finished sessions are replaced");
    }
}
