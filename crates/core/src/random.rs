//! The operating system's random number generator, behind one fallible function.
//!
//! Every nonce, key and token in Latchkey comes from here. A failing system RNG is reported as an
//! error instead of a panic, so a service can answer the request that hit it and keep serving.

/// The operating system could not supply random bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomError;

/// Fills `buf` with bytes from the operating system's cryptographically secure generator.
pub fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(|_| RandomError)
}

/// Returns `N` random bytes from the operating system's cryptographically secure generator.
pub fn array<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut out = [0u8; N];
    fill(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_draws_differ() {
        let a = array::<32>().unwrap();
        let b = array::<32>().unwrap();
        assert_ne!(a, b, "two 256-bit draws from the OS RNG must not collide");
    }
}
