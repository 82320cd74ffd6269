//! One module per subcommand: its flags and what it does.

pub(crate) mod check;
pub(crate) mod check_op;
pub(crate) mod dispute;
pub(crate) mod fleet_flags;
pub(crate) mod hash;
pub(crate) mod keygen;
pub(crate) mod load;
pub(crate) mod manifest;
pub(crate) mod new;
pub(crate) mod provide;
pub(crate) mod run;
pub(crate) mod serve;
pub(crate) mod spot_check;
pub(crate) mod submit;
pub(crate) mod verify;
