//! The TLS crypto both ends of a Syncline QUIC connection use: ring, with TLS 1.3's
//! AES-128-GCM suite preferred. Here, so the server, the client and the harness's bare
//! quinn peer cannot drift apart; behind the `io` feature.

use rustls::crypto::CryptoProvider;
use rustls::CipherSuite;

/// ring's provider with `TLS13_AES_128_GCM_SHA256` first, the other suites after it in
/// rustls's order.
///
/// rustls lists AES-256-GCM-SHA384 first. Every QUIC packet is sealed with the
/// negotiated AEAD and its header protected with the same cipher, so the choice is paid
/// per packet, and a fan-out sends one packet per subscriber per event: AES-128 takes 10
/// rounds per block against AES-256's 14. The handshake's key schedule follows the
/// suite's hash: SHA-256 has hardware instructions on today's x86 (SHA-NI) where
/// SHA-384 often runs in software (a server profile of 10,000 connections opening had
/// `sha512_block_data_order_nohw` at 6.7% of its samples). AES-128-GCM-SHA256 is the
/// suite every TLS 1.3 implementation must support (RFC 8446, 9.1).
pub fn quic_crypto_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    // Stable: the others keep their order.
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != CipherSuite::TLS13_AES_128_GCM_SHA256);
    provider
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_128_gcm_comes_first_and_no_suite_is_lost() {
        let ours = quic_crypto_provider();
        let stock = rustls::crypto::ring::default_provider();
        assert_eq!(
            ours.cipher_suites[0].suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        let mut a: Vec<_> = ours.cipher_suites.iter().map(|s| s.suite()).collect();
        let mut b: Vec<_> = stock.cipher_suites.iter().map(|s| s.suite()).collect();
        a.sort_by_key(|s| u16::from(*s));
        b.sort_by_key(|s| u16::from(*s));
        assert_eq!(a, b);
    }
}
