//! The key rotation handover rule: a rotation entry covered by a checkpoint signed by a
//! trusted version hands trust to the version it introduces.

use crate::checkpoint::PublicKeyVersion;
use crate::receipt::KeyRotation;

/// The key version that rotation entry `rotation` introduces, when `signer` — the key of a
/// trusted checkpoint covering the entry — may vouch for it (same provider and key id). This
/// is the handover rule both offline verification and the quorum witness follow.
pub fn handed_over_key(
    signer: &PublicKeyVersion,
    rotation: &KeyRotation,
) -> Option<PublicKeyVersion> {
    (rotation.provider == signer.provider && rotation.key_id == signer.key_id).then(|| {
        PublicKeyVersion {
            provider: rotation.provider.clone(),
            key_id: rotation.key_id.clone(),
            version: rotation.new_version,
            alg: rotation.alg,
            public_key: rotation.public_key.clone(),
            retired: false,
        }
    })
}
