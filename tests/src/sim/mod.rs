//! Deterministic simulation: a single-threaded runtime with a virtual clock
//! ([`Simulation`]), the lab scenarios in virtual time ([`VirtualTime`]), and a
//! linearizability checker for client histories ([`linearizability`]).
//!
//! Everything that happens in a simulation derives from its seed: task scheduling,
//! election timeouts, network faults, the scenario's own choices. The same seed replays
//! the same run.

pub mod explorer;
mod invariants;
pub mod linearizability;
mod planted;
mod runtime;
mod slow_disk;

use std::future::Future;

pub use planted::PlantedBug;
pub use runtime::{SimRuntime, Simulation};

use crate::lab::World;

/// The lab scenarios in virtual time: each run is a fresh [`Simulation`] seeded from the
/// run's seed (`SIM_SEED` fixes it), so a failing run replays exactly.
#[derive(Debug)]
pub struct VirtualTime {
    simulation: Simulation,
}

impl World for VirtualTime {
    type Runtime = SimRuntime;
    const EXCLUSIVE: bool = false;
    const SEED_VARIABLE: &'static str = "SIM_SEED";

    fn create(seed: u64) -> Self {
        VirtualTime {
            simulation: Simulation::new(seed),
        }
    }

    fn runtime(&self) -> SimRuntime {
        self.simulation.runtime()
    }

    fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.simulation.block_on(future)
    }

    fn finish(self) {}
}
