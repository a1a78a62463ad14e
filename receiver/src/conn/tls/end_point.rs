//! `tls-server-end-point` channel binding data (RFC 5929 §4.1): the hash of the server's certificate,
//! with the hash function of the certificate's signature algorithm, except that MD5 and SHA-1 are
//! replaced by SHA-256. PostgreSQL computes the same on its side; SCRAM-SHA-256-PLUS sends it inside
//! the proof, so a man in the middle that terminates TLS with another certificate cannot relay the
//! authentication.
//!
//! The certificate is untrusted input (under `sslmode=require` nobody verified it), so the small DER
//! walk below checks every length and returns `None` for anything it does not understand; no
//! binding data means SCRAM without `-PLUS`, and `channel_binding=require` then refuses to connect.

use ring::digest;

/// The binding data for the server's end-entity certificate (DER), or `None` when its signature
/// algorithm has no defined hash (Ed25519, unknown algorithms) or the DER is malformed.
pub(crate) fn tls_server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    let algorithm = hash_for(cert_der)?;
    Some(digest::digest(algorithm, cert_der).as_ref().to_vec())
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
/// `[0]` constructed, explicit: RSASSA-PSS-params' hashAlgorithm.
const CONTEXT_0: u8 = 0xa0;

// Signature algorithm OIDs (DER contents).
const MD5_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04];
const SHA1_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const SHA256_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const SHA384_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const SHA512_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const ECDSA_WITH_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
const ECDSA_WITH_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const ECDSA_WITH_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const ECDSA_WITH_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
const DSA_WITH_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x03];
const DSA_WITH_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x02];
// Hash OIDs (inside RSASSA-PSS parameters).
const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];

/// The hash RFC 5929 prescribes for a certificate: that of its signatureAlgorithm, SHA-256 for MD5
/// and SHA-1.
fn hash_for(cert_der: &[u8]) -> Option<&'static digest::Algorithm> {
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm AlgorithmIdentifier, signature }
    let (cert, _) = expect(cert_der, SEQUENCE)?;
    let (_tbs, rest) = expect(cert, SEQUENCE)?;
    let (alg_id, _) = expect(rest, SEQUENCE)?;
    let (oid, params) = expect(alg_id, OID)?;
    match oid {
        MD5_WITH_RSA | SHA1_WITH_RSA | ECDSA_WITH_SHA1 | DSA_WITH_SHA1 | SHA256_WITH_RSA
        | ECDSA_WITH_SHA256 | DSA_WITH_SHA256 => Some(&digest::SHA256),
        SHA384_WITH_RSA | ECDSA_WITH_SHA384 => Some(&digest::SHA384),
        SHA512_WITH_RSA | ECDSA_WITH_SHA512 => Some(&digest::SHA512),
        RSASSA_PSS => pss_hash(params),
        _ => None,
    }
}

/// RSASSA-PSS-params ::= SEQUENCE { hashAlgorithm [0] AlgorithmIdentifier DEFAULT sha1, … }
fn pss_hash(params: &[u8]) -> Option<&'static digest::Algorithm> {
    let (seq, _) = expect(params, SEQUENCE)?;
    let hash_oid = match expect(seq, CONTEXT_0) {
        None => SHA1,
        Some((explicit, _)) => {
            let (alg_id, _) = expect(explicit, SEQUENCE)?;
            expect(alg_id, OID)?.0
        }
    };
    match hash_oid {
        SHA1 | SHA256 => Some(&digest::SHA256),
        SHA384 => Some(&digest::SHA384),
        SHA512 => Some(&digest::SHA512),
        _ => None,
    }
}

/// Reads one DER element with tag `tag` at the start of `input`: (its contents, what follows).
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate-shaped DER: SEQUENCE { SEQUENCE {} (tbs), SEQUENCE { OID, params } }.
    fn cert_with(oid: &[u8], params: &[u8]) -> Vec<u8> {
        let mut alg = vec![OID, oid.len() as u8];
        alg.extend_from_slice(oid);
        alg.extend_from_slice(params);
        let mut body = vec![SEQUENCE, 0];
        body.push(SEQUENCE);
        body.push(alg.len() as u8);
        body.extend_from_slice(&alg);
        let mut der = vec![SEQUENCE, body.len() as u8];
        der.extend_from_slice(&body);
        der
    }

    #[test]
    fn hash_follows_the_signature_algorithm() {
        let h =
            |oid: &[u8], params: &[u8]| hash_for(&cert_with(oid, params)).map(|a| a.output_len());
        assert_eq!(h(ECDSA_WITH_SHA256, &[]), Some(32));
        assert_eq!(h(SHA1_WITH_RSA, &[0x05, 0x00]), Some(32));
        assert_eq!(h(MD5_WITH_RSA, &[0x05, 0x00]), Some(32));
        assert_eq!(h(SHA384_WITH_RSA, &[0x05, 0x00]), Some(48));
        assert_eq!(h(ECDSA_WITH_SHA512, &[]), Some(64));
        // Ed25519 (1.3.101.112): no hash defined, so no binding.
        assert_eq!(h(&[0x2b, 0x65, 0x70], &[]), None);
        // RSASSA-PSS with SHA-384, and with the default (SHA-1 → SHA-256).
        let mut pss = vec![
            SEQUENCE,
            0,
            CONTEXT_0,
            0,
            SEQUENCE,
            0,
            OID,
            SHA384.len() as u8,
        ];
        pss.extend_from_slice(SHA384);
        pss[5] = (2 + SHA384.len()) as u8;
        pss[3] = (pss.len() - 4) as u8;
        pss[1] = (pss.len() - 2) as u8;
        assert_eq!(h(RSASSA_PSS, &pss), Some(48));
        assert_eq!(h(RSASSA_PSS, &[SEQUENCE, 0]), Some(32));
    }

    #[test]
    fn malformed_der_gives_none_never_a_panic() {
        let good = cert_with(ECDSA_WITH_SHA256, &[]);
        for cut in 0..good.len() {
            assert_eq!(tls_server_end_point(&good[..cut]), None, "cut at {cut}");
        }
        assert_eq!(
            tls_server_end_point(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(tls_server_end_point(&[0x30, 0x80]), None);
        assert_eq!(tls_server_end_point(&good).map(|v| v.len()), Some(32));
    }
}
