//! The one error type of the environments crate.

/// What went wrong when making, stepping or collecting from an environment.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvError {
    /// The id names no environment.
    #[error("unknown environment id `{id}`; known ids: {known}")]
    UnknownId {
        /// The id that was asked for.
        id: String,
        /// The known ids, comma separated.
        known: String,
    },
    /// The id names an environment family but its parameter is invalid.
    #[error("environment id `{id}`: {reason}")]
    BadId {
        /// The id that was asked for.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An action of the wrong kind, size or value.
    #[error("{env}: expected {expected}, found {found}")]
    BadAction {
        /// The environment id.
        env: String,
        /// What the action space accepts.
        expected: String,
        /// What was given.
        found: String,
    },
    /// A batch of the wrong size for a vector of environments.
    #[error("vector of {envs} `{env}` environments: expected {expected}, found {found}")]
    BadBatch {
        /// The environment id.
        env: String,
        /// How many environments the vector holds.
        envs: usize,
        /// What was expected.
        expected: String,
        /// What was given.
        found: String,
    },
    /// An internal state of the wrong size or with non-finite values.
    #[error("{env}: state expected {expected}, found {found}")]
    BadState {
        /// The environment id.
        env: String,
        /// What the state must hold.
        expected: String,
        /// What was given.
        found: String,
    },
    /// A tier name that is not one of the known tiers.
    #[error(
        "unknown tier `{0}`; known tiers: random, medium, expert, medium-expert, medium-replay"
    )]
    UnknownTier(String),
    /// MuJoCo is not set up in its folder.
    #[error(
        "MuJoCo 3.17.0 is not set up in {dir} (missing: {missing}); run `flowrl setup mujoco`, \
         or point FLOWRL_MUJOCO_DIR at a folder made by it"
    )]
    MujocoNotSetUp {
        /// The folder looked in.
        dir: String,
        /// The files that are missing.
        missing: String,
    },
    /// MuJoCo failed to load or to compile a model.
    #[error("MuJoCo: {what}: {reason}")]
    Mujoco {
        /// What was being done.
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// An argument out of its valid range.
    #[error("{what}: expected {expected}, found {found}")]
    BadArgument {
        /// The argument.
        what: String,
        /// Its valid range.
        expected: String,
        /// What was given.
        found: String,
    },
}
