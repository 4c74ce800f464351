//! The registry: the one place that names the protocols streamlab can test.
//! Adding a protocol is adding its folder under `src/` and one line here.

use streamlab_core::sut::Protocol;

/// Every registered protocol.
pub fn protocols() -> &'static [&'static dyn Protocol] {
    &[
        &streamlab_mediastream::sut::MediaStream,
        &streamlab_groupstream::sut::GroupStream,
        &streamlab_srt::sut::Srt,
        &streamlab_msp::sut::Msp,
        &streamlab_teleport::sut::Teleport,
    ]
}

/// The protocol called `name`.
pub fn protocol(name: &str) -> Option<&'static dyn Protocol> {
    protocols().iter().copied().find(|p| p.name() == name)
}

/// The registered protocols' names.
pub fn names() -> Vec<&'static str> {
    protocols().iter().map(|p| p.name()).collect()
}
