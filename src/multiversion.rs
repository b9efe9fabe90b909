//! `multiversion!`: a function compiled for the baseline instruction set and for
//! AVX, the AVX copy run where the processor has it (the simulator's lanes over paths
//! and the tape's blocks over rows use it).

/// Defines `$name` twice over: compiled for AVX, run when the processor has it, and
/// as compiled for the baseline (also callable as `$base`, for the tests): wider
/// vectors for the same operations. The numbers are the same bits either way: every
/// operation used (+, −, ×, ÷, √, comparisons, bit operations) is correctly rounded or
/// exact in both instruction sets, and Rust never fuses a multiply and an add on its own.
///
/// The body is written out in a `#[target_feature(enable = "avx")]` function, so it is
/// compiled for AVX whatever the optimiser decides about inlining (the `#[inline(always)]`
/// functions it calls are inlined into it); handing a function or a closure to such a
/// wrapper instead leaves it to the optimiser, which may keep the call.
macro_rules! multiversion {
    (
        $(#[$m:meta])*
        $vis:vis fn $name:ident $(<$(const $cp:ident : $cpt:ty),*>)?
            ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?
        $body:block
        baseline $base:ident
    ) => {
        $(#[$m])*
        #[inline(always)]
        $vis fn $name $(<$(const $cp: $cpt),*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx")]
                #[inline(never)]
                fn avx $(<$(const $cp: $cpt),*>)? ($($arg: $ty),*) $(-> $ret)? $body
                if std::arch::is_x86_feature_detected!("avx") {
                    // SAFETY: the processor has AVX (checked just above).
                    return unsafe { avx $(::<$($cp),*>)? ($($arg),*) };
                }
            }
            $base $(::<$($cp),*>)? ($($arg),*)
        }

        /// The same function compiled for the baseline instruction set only.
        #[inline(always)]
        #[allow(dead_code)]
        $vis fn $base $(<$(const $cp: $cpt),*>)? ($($arg: $ty),*) $(-> $ret)? $body
    };
    // The same for functions generic over types (`fn f<T: Bound>(…)`).
    (
        $(#[$m:meta])*
        $vis:vis fn $name:ident <$($tp:ident : $bound:path),+>
            ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?
        $body:block
        baseline $base:ident
    ) => {
        $(#[$m])*
        #[inline(always)]
        $vis fn $name<$($tp: $bound),+>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx")]
                #[inline(never)]
                fn avx<$($tp: $bound),+>($($arg: $ty),*) $(-> $ret)? $body
                if std::arch::is_x86_feature_detected!("avx") {
                    // SAFETY: the processor has AVX (checked just above).
                    return unsafe { avx::<$($tp),+>($($arg),*) };
                }
            }
            $base::<$($tp),+>($($arg),*)
        }

        /// The same function compiled for the baseline instruction set only.
        #[inline(always)]
        #[allow(dead_code)]
        $vis fn $base<$($tp: $bound),+>($($arg: $ty),*) $(-> $ret)? $body
    };

}
