//! The shape every analysis's settings share: a builder holds a draft whose setters
//! only store values, `build` checks the draft once and returns the configuration,
//! whose fields are then read through getters and cannot be changed into an invalid
//! state from outside the crate.

/// A setter of a config builder: stores the value; the check comes with `build`.
macro_rules! setters {
    ($($(#[$m:meta])* $field:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$m])*
            pub fn $field(&mut self, value: $ty) -> &mut Self {
                self.draft.$field = value;
                self
            }
        )*
    };
}
pub(crate) use setters;

/// A getter of a checked config.
macro_rules! getters {
    ($($(#[$m:meta])* $field:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$m])*
            pub fn $field(&self) -> $ty {
                self.$field.clone()
            }
        )*
    };
}
pub(crate) use getters;
