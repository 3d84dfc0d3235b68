//! Test support: a reproducible random stream and a simulated service of `c` servers with a
//! constant service time under Poisson arrivals (first come, first served), whose latencies
//! the model tests fit.

/// xorshift64*.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in (0, 1).
    pub fn next_f64(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// An exponential gap of mean `1 / rate`.
    pub fn exp(&mut self, rate: f64) -> f64 {
        -self.next_f64().ln() / rate
    }
}

/// `c` servers of constant service time `service_s`.
pub struct Servers {
    free_at: Vec<f64>,
    service_s: f64,
}

impl Servers {
    /// All idle at time 0.
    pub fn new(c: usize, service_s: f64) -> Servers {
        Servers {
            free_at: vec![0.0; c],
            service_s,
        }
    }

    /// A request arriving at `t` (seconds, non-decreasing): its latency, waiting included.
    pub fn serve(&mut self, t: f64) -> f64 {
        let (i, at) = self
            .free_at
            .iter()
            .copied()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, 0.0));
        let start = t.max(at);
        if let Some(slot) = self.free_at.get_mut(i) {
            *slot = start + self.service_s;
        }
        start + self.service_s - t
    }
}
