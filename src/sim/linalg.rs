//! The simulator's dense linear algebra is the models' own ([`crate::models::linalg`]):
//! one Jacobi eigensolver and one symmetric square root serve the model coefficients
//! and the noise factors of SGD.

pub(crate) use crate::models::linalg::{
    EigenScratch, JACOBI_MAX_DIM, NoConvergence, mat_vec, sym_sqrt,
};
